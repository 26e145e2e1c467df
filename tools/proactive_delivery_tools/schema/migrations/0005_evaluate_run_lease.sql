-- An evaluate run is recorded when it starts (with the time by which it is certainly over: its
-- deadline), and completed when it finishes. Rows it recorded as queued carry its id, so the
-- next run finds the rows of a run that died before handing them to SQS at once (the run is
-- past its deadline and never finished), instead of after RECONCILE_AFTER_SECONDS.
ALTER TABLE delivery.evaluate_run ADD COLUMN IF NOT EXISTS started_at timestamptz;
ALTER TABLE delivery.evaluate_run ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
-- A started run has no finished_at yet. The default stays, so a function of the previous
-- release (which records a run only when it finishes) keeps working while this one deploys.
ALTER TABLE delivery.evaluate_run ALTER COLUMN finished_at DROP NOT NULL;

-- The runs that started but never finished: what the reconciliation sweep looks up.
CREATE INDEX IF NOT EXISTS evaluate_run_unfinished_idx
    ON delivery.evaluate_run (id)
    WHERE finished_at IS NULL;

ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS queued_by_run bigint;
