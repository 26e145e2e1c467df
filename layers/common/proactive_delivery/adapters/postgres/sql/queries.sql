-- Named queries, loaded once by adapters/postgres/database.py and called by name with
-- %(name)s parameters. Each state change is ONE conditional statement: it states the state it
-- expects in its WHERE clause, so two workers can never both win a transition.
--
-- The platform's tables differ between deployments; the {{...}} placeholders are filled in
-- for the schema found in this database (adapters/postgres/platform_sql.py). Platform
-- timestamps are naive UTC: every one is read with {{utc(...)}} and written with
-- {{stored(...)}}, never through the session's TimeZone.

-- name: enqueue_new_proactive
-- One keyset page of the platform's unsent messages, recorded as queued in the same
-- statement. sent_at IS NULL is the platform's only "due" signal (a row whose created_at
-- is NULL is due too). ON CONFLICT DO NOTHING makes an overlapping evaluate run harmless:
-- only the run whose INSERT wins gets the id back, so each id is queued once. The cursor
-- (last_id) comes from the page, not from what was inserted, so the scan always moves on.
-- enqueued_at is set here, ahead of the SendMessageBatch that follows: what SQS refuses or
-- never gets goes back to pending (return_to_pending) at once, and this keeps the hot path
-- at one statement a page. The rows carry the run's id: if the run is killed in between,
-- the next run finds them as the rows of a run that never finished (requeue_stranded).
WITH page AS (
    SELECT m.id, m.contractor_id
    FROM ai_proactive_messages m
    WHERE m.sent_at IS NULL
      AND m.id > %(after_id)s
    ORDER BY m.id
    LIMIT %(page_size)s
),
{{> record_page_as_queued}}

-- name: enqueue_new_followup
-- The same for contractor_followup_schedules, due as the platform's own sender had it:
-- status 'scheduled' and scheduled_time come ('cancelled', 'sent', 'pending', NULL... are
-- not due). The comparison keeps scheduled_time untouched (now() in its representation).
-- Its ids live under source 'followup', so they never collide with proactive ids.
WITH page AS (
    SELECT f.id, f.contractor_id
    FROM contractor_followup_schedules f
    WHERE f.status = 'scheduled'
      AND f.sent_at IS NULL
      AND f.scheduled_time <= {{now(f.scheduled_time)}}
      AND f.id > %(after_id)s
    ORDER BY f.id
    LIMIT %(page_size)s
),
{{> record_page_as_queued}}

-- name: record_page_as_queued
-- The end of both enqueue_new statements: a page `page` (id, contractor_id) of the source
-- %(source)s recorded as queued by the run, and what the run needs back.
fresh AS (
    INSERT INTO delivery.message_state
        (source, source_id, state, queued_at, enqueued_at, next_attempt_at, contractor_id, queued_by_run)
    SELECT %(source)s, p.id, 'queued', now(), now(), now(), p.contractor_id, %(run_id)s
    FROM page p
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING source_id
)
SELECT (SELECT max(id) FROM page) AS last_id,
       (SELECT count(*) FROM page) AS scanned,
       coalesce((SELECT array_agg(source_id ORDER BY source_id) FROM fresh), '{}'::bigint[]) AS queued_ids

-- name: requeue_stranded
-- The reconciliation sweep: messages that are ours but reachable by nothing. pending = a
-- SendMessageBatch entry failed; queued by a run that is past its deadline and never
-- finished = that run died between recording the rows and its SendMessageBatch (found by
-- the very next run); queued but never handed to SQS (enqueued_at NULL) for longer than an
-- evaluate run can live = likewise, for rows re-queued before runs were recorded; on the
-- queue but not consumed for longer than the threshold = the SQS message was lost; sending with an expired lease = the deliverer died mid-send; deferred
-- whose time has come = quiet hours or the daily cap held it and the window is open now.
-- The clocks are left as they are (enqueued_at goes back to NULL until SQS accepts the new
-- queue message, mark_enqueued), so a re-queuing run that dies too leaves the rows to be
-- found by the very next run, not after another threshold. SKIP LOCKED lets a concurrent run
-- or deliverer keep its rows.
WITH stranded AS (
    SELECT s.id
    FROM delivery.message_state s
    WHERE s.source = %(source)s
      AND s.state IN ('pending', 'queued', 'sending', 'deferred')
      AND s.id > %(after_id)s
      AND (
          s.state = 'pending'
          OR (s.state = 'deferred' AND s.next_attempt_at <= now())
          OR (s.state = 'queued' AND s.queued_by_run IN (
                  SELECT r.id FROM delivery.evaluate_run r
                  WHERE r.finished_at IS NULL AND r.deadline_at < now()))
          OR (s.state = 'queued' AND s.enqueued_at IS NULL
              AND s.updated_at <= now() - make_interval(secs => %(run_lease)s))
          OR (s.state = 'queued' AND s.enqueued_at IS NOT NULL
              AND s.next_attempt_at <= now() - make_interval(secs => %(reconcile_after)s))
          OR (s.state = 'sending' AND s.lease_expires_at < now())
      )
    ORDER BY s.id
    LIMIT %(page_size)s
    FOR UPDATE SKIP LOCKED
)
UPDATE delivery.message_state s
SET state = 'queued',
    queued_at = CASE WHEN s.state = 'queued' THEN s.queued_at ELSE now() END,
    enqueued_at = NULL,
    queued_by_run = %(run_id)s,
    lease_expires_at = NULL, claim_token = NULL, updated_at = now()
FROM stranded
WHERE s.id = stranded.id
RETURNING s.id, s.source_id;

-- name: mark_enqueued
-- SQS accepted queue messages for these rows: start their reconciliation clock. A row a
-- deliverer already claimed is left alone (its state is no longer 'queued'). next_attempt_at
-- keeps a later time (a short deferral carried by DelaySeconds).
-- Joined to the ids (not `= ANY`), so the plan is a lookup per id on (source, source_id)
-- even when the statistics still think the table is empty (a first run over a backlog).
UPDATE delivery.message_state s
SET enqueued_at = now(), next_attempt_at = greatest(s.next_attempt_at, now())
FROM unnest(%(source_ids)s::bigint[]) AS w(source_id)
WHERE s.state = 'queued'
  AND s.source = %(source)s
  AND s.source_id = w.source_id
RETURNING s.source_id;

-- name: return_to_pending
-- SendMessageBatch refused these entries (or the run stopped before sending them): put them
-- back so the next evaluate run picks them up at once instead of after the threshold.
UPDATE delivery.message_state s
SET state = 'pending', enqueued_at = NULL, updated_at = now()
FROM unnest(%(source_ids)s::bigint[]) AS w(source_id)
WHERE s.state = 'queued'
  AND s.source = %(source)s
  AND s.source_id = w.source_id
RETURNING s.source_id;

-- name: message_facts
-- Everything the verdict on one message needs, for a row `w` (source, source_id) of the
-- including query: the platform's content and status, the contractor's contact details and
-- the platform's own contact rules (timezone, sms_opt_in), our preference row, and what the
-- contractor was sent in the last 26 hours (enough to cover any local day). The ONE source
-- of these facts: claim_batch (send time) and policy_inputs (queue time) both include it.
-- The way back adds: the channels a provider reported undeliverable (suppressed_channels),
-- and, with IGNORED_RUN_PAUSE on (the `ignored_run` feature), the contractor's last
-- proactive sends (as many as it counts) with whether each was answered.
SELECT content.contractor_id,
       content.message_type,
       content.body,
       content.due_at,
       content.platform_sent_at,
       content.platform_status,
       content.action_completed,
       k.first_name::text AS first_name,
       {{opt(k.last_name, text)}} AS last_name,
       {{opt(k.name, text)}} AS full_name,
       k.phone::text AS phone,
       k.email::text AS email,
       {{opt(k.timezone, text)}} AS contractor_timezone,
       {{opt(k.sms_opt_in, boolean)}} AS sms_opt_in,
       p.contractor_id AS pref_contractor_id,
       p.channels AS pref_channels,
       p.opted_out AS pref_opted_out,
       p.opted_out_channels AS pref_opted_out_channels,
       p.timezone AS pref_timezone,
       p.quiet_start AS pref_quiet_start,
       p.quiet_end AS pref_quiet_end,
       p.max_per_day AS pref_max_per_day,
       recent.sent_times,
       p.suppressed_channels AS pref_suppressed_channels
       {{#ignored_run}}
       , engagement.recent_proactive_sent_at, engagement.recent_proactive_answered
       {{/ignored_run}}
FROM (
    {{#proactive}}
    SELECT m.contractor_id::bigint AS contractor_id,
           m.message_type::text AS message_type,
           m.message_content::text AS body,
           {{utc(m.created_at)}} AS due_at,
           {{utc(m.sent_at)}} AS platform_sent_at,
           NULL::text AS platform_status,
           false AS action_completed
    FROM ai_proactive_messages m
    WHERE w.source = 'proactive' AND m.id = w.source_id
    {{/proactive}}
    {{#both_sources}}UNION ALL{{/both_sources}}
    {{#followup}}
    SELECT f.contractor_id::bigint AS contractor_id,
           f.followup_type::text AS message_type,
           f.message_template::text AS body,
           {{utc(f.scheduled_time)}} AS due_at,
           {{utc(f.sent_at)}} AS platform_sent_at,
           f.status::text AS platform_status,
           {{#action_items}}
           coalesce(f.skip_if_completed, false) AND EXISTS (
               SELECT 1 FROM contractor_action_items a
               WHERE a.id = f.action_item_id AND a.status = 'completed'
           )
           {{/action_items}}
           {{^action_items}}false{{/action_items}}
           AS action_completed
    FROM contractor_followup_schedules f
    WHERE w.source = 'followup' AND f.id = w.source_id
    {{/followup}}
) content
LEFT JOIN contractors k ON k.id = content.contractor_id
LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = content.contractor_id
LEFT JOIN LATERAL (
    SELECT array_agg(r.sent_at) AS sent_times
    FROM delivery.message_state r
    WHERE r.contractor_id = content.contractor_id
      AND r.state = 'sent'
      AND r.sent_at > now() - interval '26 hours'
) recent ON true
{{#ignored_run}}
LEFT JOIN LATERAL (
    -- IGNORED_RUN_PAUSE (only rendered when it is on): the contractor's last proactive sends,
    -- and whether each was answered: a reply the inbound processor linked to it, or a
    -- response on the platform's row (whoever wrote it).
    SELECT array_agg(q.sent_at ORDER BY q.sent_at DESC) AS recent_proactive_sent_at,
           array_agg(q.answered ORDER BY q.sent_at DESC) AS recent_proactive_answered
    FROM (
        SELECT r.sent_at,
               EXISTS (SELECT 1 FROM delivery.inbound_event i WHERE i.delivery_id = r.id AND i.outcome = 'linked')
               {{#proactive}}{{#m.contractor_response}}
               OR EXISTS (SELECT 1 FROM ai_proactive_messages pm
                          WHERE pm.id = r.source_id AND pm.contractor_response IS NOT NULL)
               {{/m.contractor_response}}{{/proactive}}
               AS answered
        FROM delivery.message_state r
        WHERE r.contractor_id = content.contractor_id
          AND r.state = 'sent'
          AND r.source = 'proactive'
        ORDER BY r.sent_at DESC
        LIMIT %(ignored_run)s
    ) q
) engagement ON true
{{/ignored_run}}

-- name: claim_batch
-- Claims every message of an SQS batch that is free to send, in one statement, with a
-- lease. A message is free when it is queued/pending, or 'sending' under a lease that has
-- expired (its deliverer died), or already held by this very claim token (the statement is
-- retried after a dropped connection). SKIP LOCKED: a concurrent deliverer holding the row
-- wins and this one does not wait. The outer SELECT reports every requested id, with the
-- state it had before this statement (all parts of a WITH share one snapshot), so the
-- caller can tell "already sent" from "held elsewhere" from "unknown id" without a second
-- query; claimed rows carry their facts (message_facts), so a batch stays at one claim
-- statement and one outcome statement.
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
       s.paced_until,
       facts.*
FROM wanted w
LEFT JOIN delivery.message_state s ON s.source = w.source AND s.source_id = w.source_id
LEFT JOIN claimed c ON c.id = s.id
LEFT JOIN LATERAL ({{> message_facts}}) facts ON c.id IS NOT NULL;

-- name: policy_inputs
-- The queue-time verdict's inputs for freshly queued ids: the same facts as the claim.
WITH wanted AS (
    SELECT DISTINCT %(source)s::text AS source, w.source_id
    FROM unnest(%(source_ids)s::bigint[]) AS w(source_id)
)
SELECT w.source, w.source_id, facts.*
FROM wanted w
LEFT JOIN LATERAL ({{> message_facts}}) facts ON true;

-- name: record_outcomes
-- Writes a whole batch's outcomes in one statement: the new states, one attempt_log row
-- per real send, and on the platform exactly what its own senders wrote: sent_at and
-- updated_at of a delivered proactive message; status 'sent', sent_at, sent_by and
-- updated_at of a delivered follow-up, with the next occurrence of a recurring one; status
-- 'cancelled' for a follow-up whose action item was completed. Guarded by the claim token:
-- if this deliverer's lease expired and another took the message over, nothing here touches
-- it, and because the claim lets a message become 'sent' once, a duplicate SQS delivery, a
-- replay or a retried statement can never write a second next occurrence. The platform
-- updates keep "sent_at IS NULL" so a value set by anyone else is never overwritten.
WITH outcome AS (
    SELECT *
    FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(
        delivery_id bigint, state text, outcome text, attempted boolean, channel text, provider_ref text,
        reason text, error text, http_status integer, started_at timestamptz, finished_at timestamptz,
        latency_ms integer, next_attempt_at timestamptz, opt_out_contractor_id bigint, opt_out_channel text,
        provider text, transient boolean, retry_after double precision, paced_until timestamptz,
        phone_hash text
    )
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
        -- A slot held for the provider's pace, or none: any other outcome gives it up.
        paced_until = o.paced_until,
        sent_at = CASE WHEN o.state = 'sent' THEN o.finished_at ELSE s.sent_at END,
        phone_hash = coalesce(decode(o.phone_hash, 'hex'), s.phone_hash),
        lease_expires_at = NULL,
        claim_token = NULL,
        updated_at = now()
    FROM outcome o
    WHERE s.id = o.delivery_id
      AND s.state = 'sending'
      AND s.claim_token = %(claim_token)s
    RETURNING s.id, s.source, s.source_id, s.state, s.reason, s.attempts, s.sent_at
),
logged AS (
    INSERT INTO delivery.attempt_log
        (delivery_id, attempt, channel, provider, started_at, finished_at, http_status, outcome, error,
         latency_ms)
    SELECT u.id, u.attempts, o.channel, o.provider, coalesce(o.started_at, now()),
           coalesce(o.finished_at, now()), o.http_status, o.outcome, o.error, o.latency_ms
    FROM updated u
    JOIN outcome o ON o.delivery_id = u.id
    WHERE o.attempted
    RETURNING delivery_id
),
{{#proactive}}
proactive_sent AS (
    UPDATE ai_proactive_messages m
    SET sent_at = {{stored(m.sent_at, u.sent_at)}}
        {{#m.updated_at}}, updated_at = {{stored(m.updated_at, now())}}{{/m.updated_at}}
    FROM updated u
    WHERE u.state = 'sent' AND u.source = 'proactive' AND m.id = u.source_id AND m.sent_at IS NULL
    RETURNING m.id
),
{{/proactive}}
{{#followup}}
{{#recurrence}}
recurring AS (
    -- The next occurrence's id is drawn first, so the sent row can point at it in the same
    -- UPDATE that marks it sent (a row cannot be updated twice in one statement).
    SELECT f.id AS previous_id,
           nextval(pg_get_serial_sequence('contractor_followup_schedules', 'id'))::integer AS next_id
    FROM updated u
    JOIN contractor_followup_schedules f ON f.id = u.source_id
    WHERE u.state = 'sent' AND u.source = 'followup'
      AND f.sent_at IS NULL
      AND f.is_recurring AND f.recurrence_interval_days > 0
      AND f.next_occurrence_id IS NULL
),
{{/recurrence}}
followup_sent AS (
    UPDATE contractor_followup_schedules f
    SET status = 'sent',
        sent_at = {{stored(f.sent_at, u.sent_at)}}
        {{#f.sent_by}}, sent_by = %(sent_by)s{{/f.sent_by}}
        {{#f.updated_at}}, updated_at = {{stored(f.updated_at, now())}}{{/f.updated_at}}
        {{#recurrence}}, next_occurrence_id = coalesce(r.next_id, f.next_occurrence_id){{/recurrence}}
    FROM updated u
    {{#recurrence}}LEFT JOIN recurring r ON r.previous_id = u.source_id{{/recurrence}}
    WHERE u.state = 'sent' AND u.source = 'followup' AND f.id = u.source_id AND f.sent_at IS NULL
    RETURNING f.id
),
{{#recurrence}}
next_occurrence AS (
    -- As the platform's sender did: the same contractor, item, event, type, template, tone,
    -- hints and flags, interval days after the previous scheduled_time, status 'scheduled'.
    INSERT INTO contractor_followup_schedules
        (id, contractor_id, action_item_id, event_id, scheduled_time, followup_type,
         message_template, message_tone, status, ai_should_personalize, ai_context_hints,
         skip_if_completed, is_recurring, recurrence_interval_days, created_at, updated_at)
    SELECT r.next_id, f.contractor_id, f.action_item_id, f.event_id,
           f.scheduled_time + make_interval(days => f.recurrence_interval_days), f.followup_type,
           f.message_template, f.message_tone, 'scheduled', f.ai_should_personalize, f.ai_context_hints,
           f.skip_if_completed, f.is_recurring, f.recurrence_interval_days,
           {{stored(f.created_at, now())}}, {{stored(f.updated_at, now())}}
    FROM recurring r
    JOIN followup_sent sent ON sent.id = r.previous_id
    JOIN contractor_followup_schedules f ON f.id = r.previous_id
    RETURNING id
),
{{/recurrence}}
followup_cancelled AS (
    -- skip_if_completed and the action item is completed: cancelled, as the platform did.
    {{> cancel_completed_followups}}
),
{{/followup}}
opted_out AS (
    -- The provider said the recipient opted out (Twilio 21610): remember it for that
    -- channel, so neither evaluate nor deliver ever tries it again. opt_out_sources records
    -- the source per channel (a START lifts a provider's opt-out, never an operator's).
    INSERT INTO delivery.contractor_preferences
        (contractor_id, opted_out_channels, opted_out_at, opt_out_source, opt_out_sources)
    SELECT DISTINCT o.opt_out_contractor_id, ARRAY[o.opt_out_channel], now(), %(opt_out_source)s,
           jsonb_build_object(o.opt_out_channel, jsonb_build_object(
               'opted_out', true, 'source', %(opt_out_source)s::text, 'at', now(), 'platform', false))
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
        opt_out_sources = delivery.contractor_preferences.opt_out_sources || EXCLUDED.opt_out_sources,
        updated_at = now()
    RETURNING contractor_id
),
paced AS (
    -- Each provider's attempts of this batch, for its circuit breaker and a 429's block.
    SELECT delivery.note_provider_attempts(
        coalesce(
            (SELECT jsonb_agg(jsonb_build_object(
                        'provider', o.provider, 'failed', o.transient, 'retry_after', o.retry_after)
                    ORDER BY o.finished_at)
             FROM outcome o
             WHERE o.attempted AND o.provider IS NOT NULL),
            '[]'::jsonb),
        %(circuit)s::jsonb
    ) AS providers
),
-- The way back (sql/inbound.sql): whose number it is. The number an SMS went to, as its
-- keyed hash, becomes the contractor's number in delivery.contractor_phone (their other
-- numbers are dropped: a reply or a STOP from a number they no longer have is not theirs).
-- message_state.phone_hash (set above) links a reply to the SMS it answers.
sms_recipient AS (
    SELECT DISTINCT ON (s.contractor_id)
           s.contractor_id, decode(o.phone_hash, 'hex') AS phone_hash
    FROM updated u
    JOIN outcome o ON o.delivery_id = u.id
    JOIN delivery.message_state s ON s.id = u.id
    WHERE u.state = 'sent' AND o.phone_hash IS NOT NULL AND s.contractor_id IS NOT NULL
    ORDER BY s.contractor_id, u.sent_at DESC
),
recipient_recorded AS (
    -- A number already recorded for the contractor (the common case) writes nothing.
    INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source)
    SELECT r.phone_hash, r.contractor_id, 'send'
    FROM sms_recipient r
    ON CONFLICT (phone_hash, contractor_id) DO UPDATE
    SET source = 'send', recorded_at = now()
    WHERE delivery.contractor_phone.source <> 'send'
    RETURNING contractor_id
),
recipient_previous_numbers AS (
    DELETE FROM delivery.contractor_phone d
    USING sms_recipient r
    WHERE d.contractor_id = r.contractor_id AND d.phone_hash <> r.phone_hash
    RETURNING d.contractor_id
)
SELECT u.id, u.state
FROM updated u, paced;

-- name: take_provider_slots
-- What each message of a batch may do now at its provider's pace (migration 0006 holds the
-- function and why it is one): one statement a batch, whatever its providers.
SELECT t.ord, t.action, t.wait_seconds, t.reason
FROM delivery.take_provider_slots(%(requests)s::jsonb, %(limits)s::jsonb, %(horizon)s, %(probe_interval)s) AS t
ORDER BY t.ord;

-- name: apply_queue_decisions
-- The queue-time verdicts on freshly queued messages, in one statement: deferred (with the
-- time the window opens), skipped or failed with the reason, or still queued with a later
-- next_attempt_at (a short deferral carried by SQS DelaySeconds). Only rows still 'queued'
-- change: a deliverer that already claimed one wins. A follow-up skipped because its action
-- item is completed is cancelled on the platform in the same statement.
WITH decision AS (
    SELECT *
    FROM jsonb_to_recordset(%(decisions)s::jsonb)
         AS d(source_id bigint, state text, reason text, next_attempt_at timestamptz)
),
updated AS (
    UPDATE delivery.message_state s
    SET state = d.state,
        reason = d.reason,
        next_attempt_at = coalesce(d.next_attempt_at, s.next_attempt_at),
        updated_at = now()
    FROM decision d
    WHERE s.source = %(source)s
      AND s.source_id = d.source_id
      AND s.state = 'queued'
    RETURNING s.source, s.source_id, s.state, s.reason
)
{{#followup}}
, followup_cancelled AS (
    {{> cancel_completed_followups}}
)
{{/followup}}
SELECT u.source_id, u.state
FROM updated u;

-- name: cancel_completed_followups
-- Inside record_outcomes and apply_queue_decisions, over their `updated` rows: a follow-up
-- skipped because its action item is completed (skip_if_completed) is cancelled on the
-- platform, with updated_at, as the platform's own sender did.
UPDATE contractor_followup_schedules f
SET status = 'cancelled'
    {{#f.updated_at}}, updated_at = {{stored(f.updated_at, now())}}{{/f.updated_at}}
FROM updated u
WHERE u.state = 'skipped' AND u.reason = 'action_completed' AND u.source = 'followup'
  AND f.id = u.source_id AND f.status = 'scheduled' AND f.sent_at IS NULL
RETURNING f.id

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

-- name: start_evaluate_run
-- A run is recorded when it starts, with the time by which it is certainly over (its
-- deadline: the function's timeout); rows it queues carry its id. Rows older than 30 days go
-- in the same statement, so the table stays a few thousand rows whatever the schedule.
WITH pruned AS (
    DELETE FROM delivery.evaluate_run WHERE coalesce(finished_at, deadline_at) < now() - interval '30 days'
)
INSERT INTO delivery.evaluate_run
    (sources, started_at, deadline_at, finished_at, enqueued, stopped_early, report)
VALUES (%(sources)s::text[], now(), now() + make_interval(secs => %(lease_seconds)s), NULL, 0, false, '{}')
RETURNING id;

-- name: finish_evaluate_run
UPDATE delivery.evaluate_run
SET finished_at = now(), enqueued = %(enqueued)s, stopped_early = %(stopped_early)s, report = %(report)s::jsonb
WHERE id = %(run_id)s
RETURNING id, finished_at;
