-- What the operators' tools read: one row per finished evaluate run, so `proactive-delivery
-- status` can say when the schedule last ran and what it did. Kept for 30 days by the
-- statement that writes it (record_evaluate_run in operations.sql).
CREATE TABLE IF NOT EXISTS delivery.evaluate_run (
    id            bigserial PRIMARY KEY,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    sources       text[]      NOT NULL,
    enqueued      integer     NOT NULL,
    stopped_early boolean     NOT NULL,
    report        jsonb       NOT NULL
);

CREATE INDEX IF NOT EXISTS evaluate_run_finished_idx ON delivery.evaluate_run (finished_at DESC);

-- `resend --failed-since` and the status page's "failures in the last 24 hours" look for
-- failed rows by the time they failed (updated_at is set by the transition to failed and
-- never again while the row stays failed).
CREATE INDEX IF NOT EXISTS message_state_failed_idx
    ON delivery.message_state (updated_at)
    WHERE state = 'failed';
