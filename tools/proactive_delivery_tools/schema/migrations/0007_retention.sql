-- The retention purge (purge_message_state in retention.sql) walks finished messages oldest
-- first, a page at a time on a keyset cursor (updated_at, id). A partial index keeps each page
-- an index range scan that starts where the last one ended, however many open or recent rows
-- the table holds. updated_at of a finished row is the time it became sent, skipped or failed
-- (nothing changes a finished row but `resend`, which makes it queued again).
CREATE INDEX IF NOT EXISTS message_state_finished_idx
    ON delivery.message_state (updated_at, id)
    WHERE state IN ('sent', 'skipped', 'failed');
