-- Named queries of the operators' commands (status, show, resend), loaded through
-- proactive_delivery.adapters.postgres.Database like the runtime's own (same placeholders
-- for the platform's tables). Same rules: every state change is one conditional statement.

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

-- name: last_evaluate_run
-- The last run that finished (a run is recorded when it starts; one still running, or one
-- killed before it finished, has no finished_at).
SELECT id, finished_at, sources, enqueued, stopped_early, report,
       extract(epoch FROM now() - finished_at)::float8 AS age_seconds
FROM delivery.evaluate_run
WHERE finished_at IS NOT NULL
ORDER BY finished_at DESC
LIMIT 1;

-- name: last_evaluate_run_by_source
-- The last run that worked each source (a run lists its sources), NULL columns for a
-- source no run has worked yet. With follow-ups every 5 minutes the hourly proactive run is
-- seldom the latest of all; each source's run is found by reading evaluate_run_finished_idx
-- backwards (a dozen rows for the hourly one).
SELECT s.source, r.id, r.finished_at, r.sources, r.enqueued, r.stopped_early,
       extract(epoch FROM now() - r.finished_at)::float8 AS age_seconds
FROM unnest(%(sources)s::text[]) WITH ORDINALITY AS s(source, position)
LEFT JOIN LATERAL (
    SELECT e.id, e.finished_at, e.sources, e.enqueued, e.stopped_early
    FROM delivery.evaluate_run e
    WHERE s.source = ANY (e.sources) AND e.finished_at IS NOT NULL
    ORDER BY e.finished_at DESC
    LIMIT 1
) r ON true
ORDER BY s.position;

-- name: state_counts
-- Open messages (any age) and final ones of the last 24 hours, by source and state.
SELECT source, state, count(*) AS messages
FROM delivery.message_state
WHERE state IN ('pending', 'queued', 'sending', 'deferred')
   OR updated_at >= now() - interval '24 hours'
GROUP BY source, state
ORDER BY source, state;

-- name: way_back_24h
-- What came back in the last 24 hours, from the events the inbound processor applied then
-- (a range scan of inbound_event_applied_idx): messages with a receipt recorded in the window,
-- by the status they have now (found by key: message_state_pkey), delivered (delivered, read)
-- or undelivered (undelivered, failed; by error code); replies linked to a message, and
-- replies linked to none (unmatched, ambiguous, outside the window); keyword and DND opt-outs
-- and opt-ins applied. Never a whole table read.
WITH recent AS (
    SELECT i.kind, i.action, i.outcome, i.delivery_id
    FROM delivery.inbound_event i
    WHERE i.applied_at >= now() - interval '24 hours'
),
receipted AS (
    SELECT s.delivery_status, s.delivery_error_code
    FROM delivery.message_state s
    WHERE s.id IN (SELECT r.delivery_id FROM recent r WHERE r.action = 'receipt' AND r.delivery_id IS NOT NULL)
)
SELECT
    (SELECT count(*) FROM receipted WHERE delivery_status IN ('delivered', 'read')) AS delivered,
    (SELECT count(*) FROM receipted WHERE delivery_status IN ('undelivered', 'failed')) AS undelivered,
    (SELECT coalesce(jsonb_object_agg(c.code, c.messages), '{}'::jsonb)
     FROM (SELECT coalesce(delivery_error_code, 'none') AS code, count(*) AS messages
           FROM receipted
           WHERE delivery_status IN ('undelivered', 'failed')
           GROUP BY 1) c) AS undelivered_by_code,
    (SELECT count(*) FROM recent WHERE outcome = 'linked') AS replied,
    (SELECT count(*) FROM recent WHERE action = 'reply' AND outcome <> 'linked') AS replies_not_linked,
    (SELECT count(*) FROM recent WHERE outcome = 'opted_out' AND kind = 'sms.received') AS opted_out_keyword,
    (SELECT count(*) FROM recent WHERE outcome = 'opted_out' AND kind = 'contact.dnd') AS opted_out_dnd,
    (SELECT count(*) FROM recent WHERE outcome = 'opted_in') AS opted_in;

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
       s.lease_expires_at, s.updated_at,
       s.delivery_status, s.delivery_error_code, s.delivery_status_at
FROM delivery.message_state s
WHERE s.source = %(source)s AND s.source_id = %(source_id)s;

-- name: message_inbound_events
-- `show SOURCE:ID`: the inbound events the processor linked to one message (replies it
-- answers, receipts about it), in the order they happened, on inbound_event_delivery_idx.
-- Never a number or a text: the table holds neither (a number only as its keyed hash, which
-- is not read here).
SELECT i.identity, i.kind, i.provider, i.action, i.keyword, i.outcome, i.status, i.error_code,
       i.occurred_at, i.received_at, i.applied_at
FROM delivery.inbound_event i
WHERE i.delivery_id = %(delivery_id)s
ORDER BY i.occurred_at, i.id;

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

-- name: provider_pace
-- Each provider the deliver function has sent to: the limit it last applied, its circuit, a
-- 429's hold, and the attempts it actually made in the last minute (per second).
SELECT p.provider, p.rate, p.burst, p.circuit, p.open_until, p.probe_until, p.opened_at, p.opens,
       p.blocked_until,
       (p.blocked_until > now()) AS blocked,
       coalesce(a.attempts, 0) / 60.0 AS attempts_per_second
FROM delivery.provider_pace p
LEFT JOIN (
    SELECT l.provider, count(*) AS attempts
    FROM delivery.attempt_log l
    WHERE l.finished_at > now() - interval '1 minute'
    GROUP BY l.provider
) a ON a.provider = p.provider
ORDER BY p.provider;
