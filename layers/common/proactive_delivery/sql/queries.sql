-- Named queries, loaded once by proactive_delivery.db.Queries and called by name with
-- %(name)s parameters. Each state change is ONE conditional statement: it states the
-- state it expects in its WHERE clause, so two workers can never both win a transition.

-- name: enqueue_new_proactive
-- One keyset page of the platform's unsent messages, recorded as queued in the same
-- statement. ON CONFLICT DO NOTHING makes an overlapping evaluate run harmless: only the
-- run whose INSERT wins gets the id back, so each id is queued once. The cursor (last_id)
-- comes from the page, not from what was inserted, so the scan always moves forward.
WITH page AS (
    SELECT m.id, m.contractor_id
    FROM ai_proactive_messages m
    WHERE m.sent_at IS NULL
      AND m.created_at <= now()
      AND m.id > %(after_id)s
    ORDER BY m.id
    LIMIT %(page_size)s
),
fresh AS (
    INSERT INTO delivery.message_state (source, source_id, state, queued_at, next_attempt_at, contractor_id)
    SELECT 'proactive', p.id, 'queued', now(), now(), p.contractor_id
    FROM page p
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING source_id
)
SELECT (SELECT max(id) FROM page) AS last_id,
       (SELECT count(*) FROM page) AS scanned,
       coalesce((SELECT array_agg(source_id ORDER BY source_id) FROM fresh), '{}'::bigint[]) AS queued_ids;

-- name: enqueue_new_followup
-- The same as enqueue_new_proactive for contractor_followup_schedules: due when
-- scheduled_time has come, unsent and not cancelled. Its ids live under source 'followup',
-- so they never collide with ai_proactive_messages ids.
WITH page AS (
    SELECT f.id, f.contractor_id
    FROM contractor_followup_schedules f
    WHERE f.sent_at IS NULL
      AND f.scheduled_time <= now()
      AND f.status IS DISTINCT FROM 'cancelled'
      AND f.id > %(after_id)s
    ORDER BY f.id
    LIMIT %(page_size)s
),
fresh AS (
    INSERT INTO delivery.message_state (source, source_id, state, queued_at, next_attempt_at, contractor_id)
    SELECT 'followup', p.id, 'queued', now(), now(), p.contractor_id
    FROM page p
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING source_id
)
SELECT (SELECT max(id) FROM page) AS last_id,
       (SELECT count(*) FROM page) AS scanned,
       coalesce((SELECT array_agg(source_id ORDER BY source_id) FROM fresh), '{}'::bigint[]) AS queued_ids;

-- name: requeue_stranded
-- The reconciliation sweep: messages that are ours but reachable by nothing. pending = a
-- SendMessageBatch entry failed; queued for longer than the threshold = the SQS message was
-- lost (or evaluate died between commit and send); sending with an expired lease = the
-- deliverer died mid-send; deferred whose time has come = quiet hours or the daily cap held
-- it and the window is open now. SKIP LOCKED lets a concurrent run or deliverer keep its rows.
WITH stranded AS (
    SELECT s.id
    FROM delivery.message_state s
    WHERE s.source = %(source)s
      AND s.state IN ('pending', 'queued', 'sending', 'deferred')
      AND s.id > %(after_id)s
      AND (
          s.state = 'pending'
          OR (s.state = 'deferred' AND s.next_attempt_at <= now())
          OR (s.state = 'queued' AND s.next_attempt_at <= now() - make_interval(secs => %(reconcile_after)s))
          OR (s.state = 'sending' AND s.lease_expires_at < now())
      )
    ORDER BY s.id
    LIMIT %(page_size)s
    FOR UPDATE SKIP LOCKED
)
UPDATE delivery.message_state s
SET state = 'queued', queued_at = now(), next_attempt_at = now(),
    lease_expires_at = NULL, claim_token = NULL, updated_at = now()
FROM stranded
WHERE s.id = stranded.id
RETURNING s.id, s.source_id;

-- name: return_to_pending
-- SendMessageBatch refused these entries (or the run stopped before sending them): put them
-- back so the next evaluate run picks them up at once instead of after the threshold.
UPDATE delivery.message_state
SET state = 'pending', updated_at = now()
WHERE state = 'queued'
  AND source = %(source)s
  AND source_id = ANY(%(source_ids)s::bigint[])
RETURNING source_id;

-- name: claim_batch
-- Claims every message of an SQS batch that is free to send, in one statement, with a
-- lease. A message is free when it is queued/pending, or 'sending' under a lease that has
-- expired (its deliverer died), or already held by this very claim token (the statement is
-- retried after a dropped connection). SKIP LOCKED: a concurrent deliverer holding the row
-- wins and this one does not wait. The outer SELECT reports every requested id, with the
-- state it had before this statement (all parts of a WITH share one snapshot), so the
-- caller can tell "already sent" from "held elsewhere" from "unknown id" without a second
-- query, and it carries the content to render.
WITH wanted AS (
    SELECT DISTINCT w.source, w.source_id
    FROM unnest(%(sources)s::text[], %(source_ids)s::bigint[]) AS w(source, source_id)
),
claimable AS (
    SELECT s.id
    FROM delivery.message_state s
    JOIN wanted w ON w.source = s.source AND w.source_id = s.source_id
    WHERE s.state IN ('pending', 'queued')
       OR (s.state = 'sending' AND (s.lease_expires_at < now() OR s.claim_token = %(claim_token)s))
    ORDER BY s.id
    FOR UPDATE OF s SKIP LOCKED
),
claimed AS (
    UPDATE delivery.message_state s
    SET state = 'sending',
        claim_token = %(claim_token)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        updated_at = now()
    FROM claimable c
    WHERE s.id = c.id
    RETURNING s.id, s.attempts
)
SELECT w.source,
       w.source_id,
       s.id AS delivery_id,
       s.state AS previous_state,
       (c.id IS NOT NULL) AS claimed,
       coalesce(c.attempts, s.attempts) AS attempts,
       content.contractor_id,
       content.message_type,
       content.body,
       content.due_at,
       content.platform_sent_at,
       content.source_status,
       k.first_name,
       k.phone,
       k.email,
       p.contractor_id AS pref_contractor_id,
       p.channels AS pref_channels,
       p.opted_out AS pref_opted_out,
       p.opted_out_channels AS pref_opted_out_channels,
       p.timezone AS pref_timezone,
       p.quiet_start AS pref_quiet_start,
       p.quiet_end AS pref_quiet_end,
       p.max_per_day AS pref_max_per_day,
       recent.sent_times
FROM wanted w
LEFT JOIN delivery.message_state s ON s.source = w.source AND s.source_id = w.source_id
LEFT JOIN claimed c ON c.id = s.id
-- The send-time policy's inputs come with the claim (preferences, and what the contractor
-- was sent in the last 26 hours, enough to cover any local day), so a batch stays at one
-- claim statement and one outcome statement.
LEFT JOIN LATERAL (
    SELECT m.contractor_id,
           m.message_type,
           m.message_content AS body,
           m.created_at AS due_at,
           m.sent_at AS platform_sent_at,
           NULL::text AS source_status
    FROM ai_proactive_messages m
    WHERE w.source = 'proactive' AND m.id = w.source_id
    UNION ALL
    SELECT f.contractor_id,
           f.followup_type,
           f.message_template,
           f.scheduled_time,
           f.sent_at,
           f.status
    FROM contractor_followup_schedules f
    WHERE w.source = 'followup' AND f.id = w.source_id
) content ON c.id IS NOT NULL
LEFT JOIN contractors k ON k.id = content.contractor_id
LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = content.contractor_id
LEFT JOIN LATERAL (
    SELECT array_agg(r.sent_at) AS sent_times
    FROM delivery.message_state r
    WHERE r.contractor_id = content.contractor_id
      AND r.state = 'sent'
      AND r.sent_at > now() - interval '26 hours'
) recent ON content.contractor_id IS NOT NULL;

-- name: record_outcomes
-- Writes a whole batch's outcomes in one statement: the new states, one attempt_log row
-- per real send, and the platform's sent_at/updated_at for what was delivered. Guarded by
-- the claim token: if this deliverer's lease expired and another took the message over,
-- nothing here touches it. The platform update keeps "sent_at IS NULL" so a value set by
-- anyone else is never overwritten.
WITH outcome AS (
    SELECT *
    FROM unnest(
        %(delivery_ids)s::bigint[],
        %(states)s::text[],
        %(outcomes)s::text[],
        %(attempted)s::boolean[],
        %(channels)s::text[],
        %(provider_refs)s::text[],
        %(reasons)s::text[],
        %(errors)s::text[],
        %(http_statuses)s::integer[],
        %(started_ats)s::timestamptz[],
        %(finished_ats)s::timestamptz[],
        %(latencies_ms)s::integer[],
        %(next_attempt_ats)s::timestamptz[],
        %(opt_out_contractor_ids)s::bigint[],
        %(opt_out_channels)s::text[]
    ) AS o(delivery_id, state, outcome, attempted, channel, provider_ref, reason, error,
           http_status, started_at, finished_at, latency_ms, next_attempt_at,
           opt_out_contractor_id, opt_out_channel)
),
updated AS (
    UPDATE delivery.message_state s
    SET state = o.state,
        attempts = s.attempts + CASE WHEN o.attempted THEN 1 ELSE 0 END,
        channel = coalesce(o.channel, s.channel),
        provider_ref = coalesce(o.provider_ref, s.provider_ref),
        reason = o.reason,
        last_error = coalesce(o.error, s.last_error),
        next_attempt_at = coalesce(o.next_attempt_at, s.next_attempt_at),
        sent_at = CASE WHEN o.state = 'sent' THEN o.finished_at ELSE s.sent_at END,
        lease_expires_at = NULL,
        claim_token = NULL,
        updated_at = now()
    FROM outcome o
    WHERE s.id = o.delivery_id
      AND s.state = 'sending'
      AND s.claim_token = %(claim_token)s
    RETURNING s.id, s.source, s.source_id, s.state, s.attempts, s.sent_at
),
logged AS (
    INSERT INTO delivery.attempt_log
        (delivery_id, attempt, channel, started_at, finished_at, http_status, outcome, error, latency_ms)
    SELECT u.id, u.attempts, o.channel, coalesce(o.started_at, now()), coalesce(o.finished_at, now()),
           o.http_status, o.outcome, o.error,
           o.latency_ms
    FROM updated u
    JOIN outcome o ON o.delivery_id = u.id
    WHERE o.attempted
    RETURNING delivery_id
),
proactive_sent AS (
    UPDATE ai_proactive_messages m
    SET sent_at = u.sent_at, updated_at = now()
    FROM updated u
    WHERE u.state = 'sent' AND u.source = 'proactive' AND m.id = u.source_id AND m.sent_at IS NULL
    RETURNING m.id
),
followup_sent AS (
    -- contractor_followup_schedules has no updated_at: only sent_at is ours to set.
    UPDATE contractor_followup_schedules f
    SET sent_at = u.sent_at
    FROM updated u
    WHERE u.state = 'sent' AND u.source = 'followup' AND f.id = u.source_id AND f.sent_at IS NULL
    RETURNING f.id
),
opted_out AS (
    -- The provider said the recipient opted out (Twilio 21610): remember it for that
    -- channel, so neither evaluate nor deliver ever tries it again.
    INSERT INTO delivery.contractor_preferences
        (contractor_id, opted_out_channels, opted_out_at, opt_out_source)
    SELECT DISTINCT o.opt_out_contractor_id, ARRAY[o.opt_out_channel], now(), %(opt_out_source)s
    FROM updated u
    JOIN outcome o ON o.delivery_id = u.id
    WHERE o.opt_out_contractor_id IS NOT NULL AND o.opt_out_channel IS NOT NULL
    ON CONFLICT (contractor_id) DO UPDATE
    SET opted_out_channels = CASE
            WHEN EXCLUDED.opted_out_channels[1] = ANY(delivery.contractor_preferences.opted_out_channels)
            THEN delivery.contractor_preferences.opted_out_channels
            ELSE delivery.contractor_preferences.opted_out_channels || EXCLUDED.opted_out_channels
        END,
        opted_out_at = EXCLUDED.opted_out_at,
        opt_out_source = EXCLUDED.opt_out_source,
        updated_at = now()
    RETURNING contractor_id
)
SELECT u.id, u.state, (SELECT count(*) FROM logged) AS attempts_logged
FROM updated u;

-- name: policy_inputs
-- What the queue-time policy check needs for freshly queued ids: the same content,
-- contact, preference and recent-sends columns the claim statement returns.
WITH wanted AS (
    SELECT DISTINCT %(source)s::text AS source, w.source_id
    FROM unnest(%(source_ids)s::bigint[]) AS w(source_id)
)
SELECT w.source_id,
       content.contractor_id,
       content.body,
       content.due_at,
       content.source_status,
       k.first_name,
       k.phone,
       k.email,
       p.contractor_id AS pref_contractor_id,
       p.channels AS pref_channels,
       p.opted_out AS pref_opted_out,
       p.opted_out_channels AS pref_opted_out_channels,
       p.timezone AS pref_timezone,
       p.quiet_start AS pref_quiet_start,
       p.quiet_end AS pref_quiet_end,
       p.max_per_day AS pref_max_per_day,
       recent.sent_times
FROM wanted w
LEFT JOIN LATERAL (
    SELECT m.contractor_id, m.message_content AS body, m.created_at AS due_at,
           NULL::text AS source_status
    FROM ai_proactive_messages m
    WHERE w.source = 'proactive' AND m.id = w.source_id
    UNION ALL
    SELECT f.contractor_id, f.message_template, f.scheduled_time, f.status
    FROM contractor_followup_schedules f
    WHERE w.source = 'followup' AND f.id = w.source_id
) content ON true
LEFT JOIN contractors k ON k.id = content.contractor_id
LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = content.contractor_id
LEFT JOIN LATERAL (
    SELECT array_agg(r.sent_at) AS sent_times
    FROM delivery.message_state r
    WHERE r.contractor_id = content.contractor_id
      AND r.state = 'sent'
      AND r.sent_at > now() - interval '26 hours'
) recent ON content.contractor_id IS NOT NULL;

-- name: apply_queue_decisions
-- The queue-time policy's verdicts on freshly queued messages, in one statement: deferred
-- (with the time the window opens), skipped or failed with the reason, or still queued with
-- a later next_attempt_at (a short deferral carried by SQS DelaySeconds). Only rows still
-- 'queued' change: a deliverer that already claimed one wins.
WITH decision AS (
    SELECT *
    FROM unnest(%(source_ids)s::bigint[], %(states)s::text[], %(reasons)s::text[],
                %(next_attempt_ats)s::timestamptz[])
         AS d(source_id, state, reason, next_attempt_at)
)
UPDATE delivery.message_state s
SET state = d.state,
    reason = d.reason,
    next_attempt_at = coalesce(d.next_attempt_at, s.next_attempt_at),
    updated_at = now()
FROM decision d
WHERE s.source = %(source)s
  AND s.source_id = d.source_id
  AND s.state = 'queued'
RETURNING s.source_id, s.state;
