-- enqueued_at: when SQS last accepted a queue message for this delivery. NULL while a row is
-- recorded as queued but not yet on the queue (between evaluate's commit and its
-- SendMessageBatch): if that run dies there, the next run finds the row at once, instead of
-- waiting out RECONCILE_AFTER_SECONDS again each time a re-queuing run dies.
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS enqueued_at timestamptz;

-- Rows queued before this migration were on the queue: keep their reconciliation clock.
UPDATE delivery.message_state
SET enqueued_at = coalesce(queued_at, updated_at)
WHERE state = 'queued' AND enqueued_at IS NULL;
