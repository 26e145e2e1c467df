-- The retention purge's statements (app/purge.py: one per entry of PURGED_TABLES), loaded and
-- rendered for the platform's schema like queries.sql.
--
-- The contract every one of them keeps, so that the purge never holds a lock for long and
-- never rewrites a table:
-- * one small batch per statement, and one statement is one transaction (the connection is
--   autocommit): at most %(batch_size)s rows of its table are read and deleted;
-- * rows another transaction holds are skipped (FOR UPDATE ... SKIP LOCKED), never waited for;
--   they are left for the next run;
-- * it pages through its table oldest first on a keyset cursor (a time, an id): parameters
--   %(after_at)s (NULL on the first page) and %(after_id)s, and it returns where the page ended,
--   so each row is read once per run, however many rows the purge keeps;
-- * only rows older than %(horizon)s (now less RETENTION_DAYS) are touched;
-- * it returns one row: scanned (rows of the page), last_at, last_id (the cursor), deleted
--   (jsonb: table name -> rows deleted);
-- * the platform's tables are only read: never deleted from, updated or locked.

-- name: purge_message_state
-- A page of finished messages (sent, skipped, failed) that last changed before the horizon,
-- oldest first, on message_state_finished_idx, locked as it is read (a row `resend` made
-- queued meanwhile is re-read under the lock and left alone). Their attempt logs go, all of
-- them. The message row goes too, with its attempts in this same statement (so the
-- attempt_log foreign key, checked at the end of the statement, never finds a child left),
-- unless the platform still has the message due: then evaluate's page statement
-- (enqueue_new_* in queries.sql), which queues every due platform row that has no row
-- here, would queue it again, and a message that was skipped (opted out, expired, no
-- contact) or failed (attempts exhausted, rejected, invalid number) could be sent after all.
-- That row stays, as the tombstone that stops a second send.
WITH page AS (
    SELECT s.id, s.source, s.source_id, s.updated_at
    FROM delivery.message_state s
    WHERE s.state IN ('sent', 'skipped', 'failed')
      AND s.updated_at < %(horizon)s
      AND (s.updated_at, s.id) > (coalesce(%(after_at)s::timestamptz, '-infinity'), %(after_id)s::bigint)
    ORDER BY s.updated_at, s.id
    LIMIT %(batch_size)s
    FOR UPDATE OF s SKIP LOCKED
),
attempts AS (
    DELETE FROM delivery.attempt_log a
    USING page h
    WHERE a.delivery_id = h.id
    RETURNING a.id
),
messages AS (
    DELETE FROM delivery.message_state s
    USING page h
    WHERE s.id = h.id
      AND NOT {{> platform_still_due}}
    RETURNING s.id
),
last AS (
    SELECT p.updated_at, p.id FROM page p ORDER BY p.updated_at DESC, p.id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM page) AS scanned,
       (SELECT updated_at FROM last) AS last_at,
       (SELECT id FROM last) AS last_id,
       jsonb_build_object(
           'attempt_log', (SELECT count(*) FROM attempts),
           'message_state', (SELECT count(*) FROM messages)
       ) AS deleted;

-- name: purge_inbound_event
-- A page of the inbound events the processor applied (delivery.inbound_event.applied_at)
-- before the horizon, oldest first, on inbound_event_applied_idx (applied_at): the cursor's
-- row comparison starts the index scan at the cursor's time, and the few rows of that same
-- time already read (a processor batch shares one applied_at) are passed over by id. Locked
-- as read (SKIP LOCKED) and deleted, in this one statement.
--
-- An event's identity is what makes a provider's retry or a DLQ replay change nothing; an
-- event waits on the inbound queue or its DLQ 14 days at most (their retention, the SQS
-- maximum), and RETENTION_DAYS is at least 30.
--
-- Kept, however old: a keyword or DND opt-out or opt-in recorded `unmatched` (a number nobody
-- we knew). evaluate (before it queues the contractor's message) and `proactive-delivery
-- inbound backfill-phones` apply the latest of each number once they know whose number it is
-- (register_contractor_phones in sql/inbound.sql), and an opt-out must not be lost to age. Such rows are read once a run and counted as kept.
--
-- delivery.inbound_event.delivery_id names the message_state row a reply or a receipt is
-- about, with no foreign key: purge_message_state deletes a message without looking here,
-- and an event can outlive its message (or a message its events) without either statement
-- failing. Message ids are never reused, so a dangling delivery_id never names another
-- message; it goes with its own row, at its own age.
WITH page AS (
    SELECT i.id, i.applied_at, i.outcome, i.action
    FROM delivery.inbound_event i
    WHERE i.applied_at < %(horizon)s
      AND (i.applied_at, i.id) > (coalesce(%(after_at)s::timestamptz, '-infinity'), %(after_id)s::bigint)
    ORDER BY i.applied_at, i.id
    LIMIT %(batch_size)s
    FOR UPDATE OF i SKIP LOCKED
),
events AS (
    DELETE FROM delivery.inbound_event i
    USING page h
    WHERE i.id = h.id
      AND NOT (h.outcome = 'unmatched' AND h.action IN ('opt_out', 'opt_in'))
    RETURNING i.id
),
last AS (
    SELECT p.applied_at, p.id FROM page p ORDER BY p.applied_at DESC, p.id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM page) AS scanned,
       (SELECT applied_at FROM last) AS last_at,
       (SELECT id FROM last) AS last_id,
       jsonb_build_object('inbound_event', (SELECT count(*) FROM events)) AS deleted;

-- name: platform_still_due
-- Whether the platform row of a finished message `h` (source, source_id) is one evaluate's
-- page statement would take as new were our row gone: a proactive message with sent_at NULL
-- (the platform's only "due" signal; one with created_at NULL never expires), a follow-up
-- with status 'scheduled' and sent_at NULL. Its scheduled_time is not asked: a follow-up
-- moved to a later time comes due again. A platform row that is gone, sent (by us or by
-- anyone), cancelled or in any other status can never come back, and neither can a message
-- of a source whose table this database does not have.
(
    false
    {{#proactive}}
    OR (h.source = 'proactive' AND EXISTS (
        SELECT 1 FROM ai_proactive_messages m WHERE m.id = h.source_id AND m.sent_at IS NULL
    ))
    {{/proactive}}
    {{#followup}}
    OR (h.source = 'followup' AND EXISTS (
        SELECT 1 FROM contractor_followup_schedules f
        WHERE f.id = h.source_id AND f.status = 'scheduled' AND f.sent_at IS NULL
    ))
    {{/followup}}
)
