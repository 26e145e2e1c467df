-- Named queries of the operators' tools and of the evaluate run's bookkeeping, loaded by
-- proactive_delivery.ops_store. Same rules as queries.sql: every state change is one
-- conditional statement.

-- name: unsent_backlog_proactive
-- Platform messages that nobody has sent and that did not end skipped or failed: what
-- contractors are still waiting for, whether or not evaluate has seen it yet. Messages the
-- policy holds back until a later time (deferred: quiet hours, the daily cap) are not
-- waiting on the pipeline and are left out, so the gauge and the alarms built on it (oldest
-- unsent, delivery stalled) stay quiet through a night of quiet hours; once the deferral
-- ends they count again. The age of the oldest is measured from its created_at (naive UTC
-- on the platform, read explicitly); a row without created_at counts but has no age.
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM now() - min({{utc(m.created_at)}})), 0)::float8 AS oldest_age_seconds
FROM ai_proactive_messages m
LEFT JOIN delivery.message_state s ON s.source = 'proactive' AND s.source_id = m.id
WHERE m.sent_at IS NULL
  AND (s.state IS NULL OR s.state NOT IN ('sent', 'skipped', 'failed'))
  AND (s.state IS DISTINCT FROM 'deferred' OR s.next_attempt_at <= now());

-- name: unsent_backlog_followup
-- The same for follow-ups: due (status 'scheduled', scheduled_time come) and unsent, not
-- deferred to a later time; the age is measured from scheduled_time.
SELECT count(*) AS backlog,
       coalesce(extract(epoch FROM now() - min({{utc(f.scheduled_time)}})), 0)::float8 AS oldest_age_seconds
FROM contractor_followup_schedules f
LEFT JOIN delivery.message_state s ON s.source = 'followup' AND s.source_id = f.id
WHERE f.status = 'scheduled'
  AND f.sent_at IS NULL
  AND f.scheduled_time <= {{now(f.scheduled_time)}}
  AND (s.state IS NULL OR s.state NOT IN ('sent', 'skipped', 'failed'))
  AND (s.state IS DISTINCT FROM 'deferred' OR s.next_attempt_at <= now());

-- name: sent_by_others_proactive
-- Platform rows whose sent_at was set in the last 24 hours by someone other than this
-- pipeline (we were not the one to send them): another sender is still running, and the
-- two together send twice. The (sent_at) index keeps it a range scan.
SELECT count(*) AS messages, max({{utc(m.sent_at)}}) AS last_sent_at
FROM ai_proactive_messages m
WHERE m.sent_at >= {{now(m.sent_at)}} - interval '24 hours'
  AND NOT EXISTS (
      SELECT 1 FROM delivery.message_state s
      WHERE s.source = 'proactive' AND s.source_id = m.id AND s.state = 'sent'
  );

-- name: sent_by_others_followup
SELECT count(*) AS messages, max({{utc(f.sent_at)}}) AS last_sent_at
FROM contractor_followup_schedules f
WHERE f.sent_at >= {{now(f.sent_at)}} - interval '24 hours'
  AND NOT EXISTS (
      SELECT 1 FROM delivery.message_state s
      WHERE s.source = 'followup' AND s.source_id = f.id AND s.state = 'sent'
  );

-- name: record_evaluate_run
-- One row per finished run; rows older than 30 days go in the same statement, so the
-- table stays a few thousand rows whatever the schedule.
WITH pruned AS (
    DELETE FROM delivery.evaluate_run WHERE finished_at < now() - interval '30 days'
)
INSERT INTO delivery.evaluate_run (sources, enqueued, stopped_early, report)
VALUES (%(sources)s::text[], %(enqueued)s, %(stopped_early)s, %(report)s::jsonb)
RETURNING id, finished_at;

-- name: last_evaluate_run
SELECT id, finished_at, sources, enqueued, stopped_early, report,
       extract(epoch FROM now() - finished_at)::float8 AS age_seconds
FROM delivery.evaluate_run
ORDER BY finished_at DESC
LIMIT 1;

-- name: state_counts
-- Open messages (any age) and final ones of the last 24 hours, by source and state.
SELECT source, state, count(*) AS messages
FROM delivery.message_state
WHERE state IN ('pending', 'queued', 'sending', 'deferred')
   OR updated_at >= now() - interval '24 hours'
GROUP BY source, state
ORDER BY source, state;

-- name: recent_failures
SELECT source, coalesce(reason, 'unknown') AS reason, count(*) AS messages
FROM delivery.message_state
WHERE state = 'failed'
  AND updated_at >= now() - interval '24 hours'
GROUP BY source, coalesce(reason, 'unknown')
ORDER BY messages DESC, source, reason;

-- name: failed_since
-- What `resend --dry-run` lists: the rows reset_failed would take.
SELECT source, source_id, reason, updated_at AS failed_at
FROM delivery.message_state
WHERE state = 'failed'
  AND updated_at >= %(since)s
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
ORDER BY updated_at, id;

-- name: reset_failed
-- `resend`: failed messages go back to queued in one conditional statement, with a fresh
-- retry window (attempt_log keeps every earlier attempt; its attempt numbers start at 1
-- again after a resend). The ids are then put on the delivery queue and pass through the
-- same claim as any other message, so a message cannot be sent twice by a resend.
UPDATE delivery.message_state
SET state = 'queued', attempts = 0, reason = NULL, queued_at = now(),
    enqueued_at = NULL, next_attempt_at = now(), lease_expires_at = NULL, claim_token = NULL,
    updated_at = now()
WHERE state = 'failed'
  AND updated_at >= %(since)s
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
RETURNING source, source_id;

-- name: message_detail
-- `show SOURCE:ID`: one message's delivery state (never its content or the contractor's
-- contact details). NULL columns when evaluate has not seen the message yet.
SELECT s.id AS delivery_id, s.state, s.reason, s.attempts, s.channel, s.provider_ref,
       s.last_error, s.contractor_id, s.created_at, s.queued_at, s.sent_at, s.next_attempt_at,
       s.lease_expires_at, s.updated_at
FROM delivery.message_state s
WHERE s.source = %(source)s AND s.source_id = %(source_id)s;

-- name: platform_row_proactive
-- Whether the platform has the message, and when it was due, for a message evaluate has
-- not seen yet.
SELECT m.id, m.contractor_id, {{utc(m.created_at)}} AS due_at, {{utc(m.sent_at)}} AS sent_at,
       NULL::text AS platform_status
FROM ai_proactive_messages m
WHERE m.id = %(source_id)s;

-- name: platform_row_followup
SELECT f.id, f.contractor_id, {{utc(f.scheduled_time)}} AS due_at, {{utc(f.sent_at)}} AS sent_at,
       f.status::text AS platform_status
FROM contractor_followup_schedules f
WHERE f.id = %(source_id)s;

-- name: attempt_history
-- Every send attempt of one message, oldest first (attempt numbers restart at 1 after a
-- resend, so the id orders them).
SELECT a.attempt, a.channel, a.outcome, a.http_status, a.latency_ms, a.error, a.started_at,
       a.finished_at
FROM delivery.attempt_log a
WHERE a.delivery_id = %(delivery_id)s
ORDER BY a.id;
