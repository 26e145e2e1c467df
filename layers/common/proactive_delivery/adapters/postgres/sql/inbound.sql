-- Named queries of the inbound processor (app/inbound_apply.py), rendered for the platform's
-- schema like queries.sql (same placeholders and table aliases: m = ai_proactive_messages,
-- f = contractor_followup_schedules, k = contractors).

-- name: apply_inbound_events
-- A whole batch of inbound events applied in ONE statement, each exactly once.
--
-- `events` is the batch (InboundRow, one JSON array); `ord` is a row's place in it. Every
-- part of a WITH sees the same snapshot, so the statement first works out, read-only, what
-- each event is (`classified`): the contractors the sender's number belongs to
-- (delivery.contractor_phone), the SMS a reply answers (the most recent one sent to that
-- number within the reply window: an index range scan on message_state's phone_hash), the
-- message a receipt is about (by our identity or the provider's reference). Then `inserted`
-- records the events new to delivery.inbound_event: an event whose identity is already there
-- (a provider's retry, a duplicate SQS delivery, a DLQ replay), or that a concurrent
-- statement records first (the unique index makes it wait, then DO NOTHING), is not
-- returned, and every effect below joins `applied` (= inserted), so it changes nothing.
--
-- A row can be changed once per statement, so the effects are grouped first: the replies to
-- one message (the first fills the columns, a later one continues the conversation), the
-- consent events of one contractor and channel (the latest wins: a STOP then a START in one
-- batch ends opted in, as applying them one by one would), every preference change of one
-- contractor (one upsert), the receipts of one message (the highest rank).
--
-- A receipt whose message is not found while the event may still wait (`may_wait`: deliver
-- may not have recorded the provider's reference yet) is not recorded: it comes back 'wait'
-- and the queue hands it out again later.
WITH ev AS (
    SELECT *
    FROM jsonb_to_recordset(%(events)s::jsonb) AS e(
        ord integer, identity text, kind text, provider text, received_at timestamptz,
        occurred_at timestamptz, action text, phone_hash text, consent text, consent_source text,
        is_reply boolean, keyword text, body text, message_source text, message_source_id bigint,
        provider_ref text, status text, error_code text, receipt_effect text, effect_reason text,
        may_wait boolean
    )
),
fresh AS (
    -- One row per identity (the same event twice in a batch is one event), and only the ones
    -- not applied before.
    SELECT DISTINCT ON (e.identity) e.*, decode(e.phone_hash, 'hex') AS sender_hash
    FROM ev e
    WHERE NOT EXISTS (SELECT 1 FROM delivery.inbound_event i WHERE i.identity = e.identity)
    ORDER BY e.identity, e.ord
),
sender AS (
    -- Whose number it is.
    SELECT f.ord, array_agg(d.contractor_id ORDER BY d.contractor_id) AS contractor_ids
    FROM fresh f
    JOIN delivery.contractor_phone d ON d.phone_hash = f.sender_hash
    GROUP BY f.ord
),
answered AS (
    -- What a reply answers: the SMS sent to that number most recently within the window,
    -- and how many contractors the SMS sent to it within the window were for (more than one
    -- is ambiguous: a shared number). A minute of clock difference between the provider and
    -- us is allowed.
    SELECT f.ord, c.delivery_id, c.contractors
    FROM fresh f
    CROSS JOIN LATERAL (
        SELECT (array_agg(s.id ORDER BY s.sent_at DESC, s.id DESC))[1] AS delivery_id,
               count(DISTINCT s.contractor_id) AS contractors
        FROM delivery.message_state s
        WHERE s.phone_hash = f.sender_hash
          AND s.state = 'sent'
          AND s.sent_at > f.occurred_at - make_interval(secs => %(reply_window_seconds)s)
          AND s.sent_at <= f.occurred_at + interval '1 minute'
    ) c
    WHERE f.is_reply AND f.sender_hash IS NOT NULL
),
receipt_target AS (
    -- The message a receipt is about: by our identity (proactive-123), else by the provider's
    -- reference deliver recorded (Twilio's MessageSid, GHL's messageId, SES's MessageId).
    SELECT f.ord, s.id AS delivery_id, s.contractor_id
    FROM fresh f
    LEFT JOIN LATERAL (
        (SELECT s.id, s.contractor_id
         FROM delivery.message_state s
         WHERE s.source = f.message_source AND s.source_id = f.message_source_id)
        UNION ALL
        (SELECT s.id, s.contractor_id
         FROM delivery.message_state s
         WHERE s.provider_ref = f.provider_ref
         ORDER BY s.id DESC
         LIMIT 1)
        LIMIT 1
    ) s ON true
    WHERE f.kind = 'message.status'
),
operator_kept AS (
    -- Contractors whose opt-out a START does not lift: an opt-out of everything (the
    -- operator's `prefs set --opt-out`), or an SMS opt-out from a source it does not lift.
    SELECT s.ord
    FROM sender s
    JOIN delivery.contractor_preferences p ON p.contractor_id = ANY (s.contractor_ids)
    WHERE p.opted_out
       OR (coalesce((p.opt_out_sources -> 'sms' ->> 'opted_out')::boolean, false)
           AND NOT (p.opt_out_sources -> 'sms' ->> 'source') = ANY (%(liftable)s::text[]))
    GROUP BY s.ord
),
classified AS (
    SELECT f.*,
           CASE WHEN r.contractor_id IS NOT NULL THEN ARRAY[r.contractor_id]
                ELSE coalesce(snd.contractor_ids, '{}'::bigint[]) END AS contractor_ids,
           CASE WHEN f.kind = 'message.status' THEN r.delivery_id
                WHEN a.contractors = 1 THEN a.delivery_id END AS delivery_id,
           CASE
               WHEN f.kind = 'message.status' THEN
                   CASE WHEN r.delivery_id IS NOT NULL THEN 'recorded'
                        WHEN f.may_wait THEN 'wait'
                        ELSE 'unknown_message' END
               WHEN f.is_reply AND a.contractors = 1 THEN 'linked'
               WHEN f.is_reply AND a.contractors > 1 THEN 'ambiguous'
               WHEN snd.ord IS NULL THEN 'unmatched'
               WHEN f.is_reply THEN 'outside_window'
               WHEN f.consent = 'out' THEN 'opted_out'
               WHEN f.consent = 'in' AND ok.ord IS NOT NULL THEN 'kept_operator_opt_out'
               WHEN f.consent = 'in' THEN 'opted_in'
               ELSE 'help'
           END AS outcome
    FROM fresh f
    LEFT JOIN sender snd ON snd.ord = f.ord
    LEFT JOIN answered a ON a.ord = f.ord
    LEFT JOIN receipt_target r ON r.ord = f.ord
    LEFT JOIN operator_kept ok ON ok.ord = f.ord
),
inserted AS (
    INSERT INTO delivery.inbound_event
        (identity, kind, provider, received_at, occurred_at, phone_hash, contractor_ids, action,
         keyword, delivery_id, status, error_code, outcome)
    SELECT c.identity, c.kind, c.provider, c.received_at, c.occurred_at, c.sender_hash,
           c.contractor_ids, c.action, c.keyword, c.delivery_id, c.status, c.error_code, c.outcome
    FROM classified c
    WHERE c.outcome <> 'wait'
    ON CONFLICT (identity) DO NOTHING
    RETURNING identity
),
applied AS (
    SELECT c.*
    FROM classified c
    JOIN inserted i ON i.identity = c.identity
),
replies AS (
    -- The replies to each message in this batch: the first one's text and time, how many.
    SELECT s.source, s.source_id,
           count(*) AS replies,
           (array_agg(a.body ORDER BY a.occurred_at, a.ord))[1] AS first_text,
           min(a.occurred_at) AS first_at
    FROM applied a
    JOIN delivery.message_state s ON s.id = a.delivery_id
    WHERE a.outcome = 'linked'
    GROUP BY s.source, s.source_id
),
{{#proactive}}
{{#m.contractor_response}}
proactive_replied AS (
    -- What the platform's own trackMessageOutcome was written to set, only where still NULL
    -- (never over what the platform wrote): the response and when it came; a reply to a
    -- message already answered continues the conversation.
    UPDATE ai_proactive_messages m
    SET contractor_response = coalesce(m.contractor_response, r.first_text)
        {{#m.response_received_at}}
        , response_received_at = coalesce(m.response_received_at, {{stored(m.response_received_at, r.first_at)}})
        {{/m.response_received_at}}
        {{#m.conversation_continued}}
        , conversation_continued = CASE WHEN m.contractor_response IS NOT NULL OR r.replies > 1
                                        THEN true ELSE m.conversation_continued END
        {{/m.conversation_continued}}
        {{#m.updated_at}}, updated_at = {{stored(m.updated_at, now())}}{{/m.updated_at}}
    FROM replies r
    WHERE %(write_responses)s
      AND r.source = 'proactive' AND m.id = r.source_id
      AND (m.contractor_response IS NULL
           {{#m.response_received_at}}OR m.response_received_at IS NULL{{/m.response_received_at}}
           {{#m.conversation_continued}}
           OR ((m.contractor_response IS NOT NULL OR r.replies > 1) AND m.conversation_continued IS NOT TRUE)
           {{/m.conversation_continued}})
    RETURNING m.id
),
{{/m.contractor_response}}
{{/proactive}}
{{#followup}}
{{#f.response_text}}
{{#f.response_received_at}}
followup_replied AS (
    -- Exactly what the platform's own recordFollowUpResponse writes, only where still NULL.
    UPDATE contractor_followup_schedules f
    SET response_text = coalesce(f.response_text, r.first_text),
        response_received_at = coalesce(f.response_received_at, {{stored(f.response_received_at, r.first_at)}})
        {{#f.updated_at}}, updated_at = {{stored(f.updated_at, now())}}{{/f.updated_at}}
    FROM replies r
    WHERE %(write_responses)s
      AND r.source = 'followup' AND f.id = r.source_id
      AND (f.response_text IS NULL OR f.response_received_at IS NULL)
    RETURNING f.id
),
{{/f.response_received_at}}
{{/f.response_text}}
{{/followup}}
consent AS (
    -- The latest consent event of each contractor and channel in this batch: keyword and DND
    -- events for SMS (every contractor the number belongs to), and what receipts say (the
    -- provider's opt-out for the message's channel, an SES complaint for e-mail).
    SELECT DISTINCT ON (x.contractor_id, x.channel) x.*
    FROM (
        SELECT k.contractor_id, 'sms'::text AS channel, a.consent = 'out' AS opted_out,
               a.consent_source AS source, a.occurred_at, a.ord
        FROM applied a
        CROSS JOIN unnest(a.contractor_ids) AS k(contractor_id)
        WHERE a.consent IS NOT NULL
        UNION ALL
        SELECT s.contractor_id, s.channel, true, a.effect_reason, a.occurred_at, a.ord
        FROM applied a
        JOIN delivery.message_state s ON s.id = a.delivery_id
        WHERE a.receipt_effect = 'opt_out' AND s.contractor_id IS NOT NULL AND s.channel IS NOT NULL
    ) x
    ORDER BY x.contractor_id, x.channel, x.occurred_at DESC, x.ord DESC
),
change AS (
    -- One row per contractor: the consent entries and the suppressions of this batch.
    SELECT x.contractor_id,
           coalesce(jsonb_object_agg(x.channel, x.entry) FILTER (WHERE x.what = 'consent'), '{}'::jsonb)
               AS consent,
           coalesce(jsonb_object_agg(x.channel, x.entry) FILTER (WHERE x.what = 'suppress'), '{}'::jsonb)
               AS suppress
    FROM (
        SELECT c.contractor_id, c.channel, 'consent' AS what,
               jsonb_build_object(
                   'opted_out', c.opted_out,
                   'source', c.source,
                   'at', c.occurred_at,
                   -- We write contractors.sms_opt_in with a keyword's or DND's SMS opt-out.
                   'platform', c.channel = 'sms' AND c.source IN ('keyword', 'dnd') AND %(write_sms_opt_in)s
                               AND {{#k.sms_opt_in}}true{{/k.sms_opt_in}}{{^k.sms_opt_in}}false{{/k.sms_opt_in}}
               ) AS entry
        FROM consent c
        UNION ALL
        -- A permanent failure: that channel is suppressed, for the number it failed for.
        SELECT s.contractor_id, s.channel, 'suppress',
               jsonb_build_object(
                   'reason', a.effect_reason, 'code', a.error_code, 'provider', a.provider,
                   'at', a.occurred_at, 'phone_hash', encode(s.phone_hash, 'hex'),
                   'message_id', s.source || '-' || s.source_id)
        FROM applied a
        JOIN delivery.message_state s ON s.id = a.delivery_id
        WHERE a.receipt_effect = 'suppress' AND s.contractor_id IS NOT NULL AND s.channel IS NOT NULL
    ) x
    GROUP BY x.contractor_id
),
before AS (
    SELECT c.contractor_id, p.opt_out_sources -> 'sms' AS sms
    FROM change c
    LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = c.contractor_id
),
preferences AS (
    -- One upsert per contractor. An entry newer than the stored one replaces it, but an
    -- opt-in never lifts an opt-out from a source it may not lift (merge_opt_out_sources);
    -- the opted-out channel list follows the entries that changed. opted_out_at and
    -- opt_out_source say when and by what the row last gained an opt-out.
    INSERT INTO delivery.contractor_preferences AS p
        (contractor_id, opted_out_channels, opted_out_at, opt_out_source, opt_out_sources,
         suppressed_channels)
    SELECT c.contractor_id,
           delivery.opted_out_channels_after('{}', '{}', c.consent),
           CASE WHEN delivery.new_opt_out_source('{}', c.consent) IS NOT NULL THEN now() END,
           delivery.new_opt_out_source('{}', c.consent),
           c.consent,
           c.suppress
    FROM change c
    ON CONFLICT (contractor_id) DO UPDATE
    SET opt_out_sources = delivery.merge_opt_out_sources(
            p.opt_out_sources, EXCLUDED.opt_out_sources, %(liftable)s::text[]),
        opted_out_channels = delivery.opted_out_channels_after(
            p.opted_out_channels, p.opt_out_sources,
            delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, %(liftable)s::text[])),
        opted_out_at = CASE
            WHEN delivery.new_opt_out_source(
                     p.opt_out_sources,
                     delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, %(liftable)s::text[]))
                 IS NOT NULL THEN now()
            ELSE p.opted_out_at END,
        opt_out_source = coalesce(
            delivery.new_opt_out_source(
                p.opt_out_sources,
                delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, %(liftable)s::text[])),
            p.opt_out_source),
        suppressed_channels = p.suppressed_channels || EXCLUDED.suppressed_channels,
        updated_at = now()
    WHERE delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, %(liftable)s::text[])
              IS DISTINCT FROM p.opt_out_sources
       OR p.suppressed_channels || EXCLUDED.suppressed_channels IS DISTINCT FROM p.suppressed_channels
    RETURNING p.contractor_id, p.opt_out_sources -> 'sms' AS sms
),
{{#k.sms_opt_in}}
platform_consent AS (
    -- contractors.sms_opt_in follows an SMS opt-out by keyword or DND (false), and the START
    -- that lifts one of those we wrote (true). Nothing else of the contractor's row.
    UPDATE contractors k
    SET sms_opt_in = NOT (pr.sms ->> 'opted_out')::boolean
    FROM preferences pr
    JOIN before b ON b.contractor_id = pr.contractor_id
    WHERE %(write_sms_opt_in)s
      AND k.id = pr.contractor_id
      AND pr.sms IS DISTINCT FROM b.sms
      AND (((pr.sms ->> 'opted_out')::boolean AND (pr.sms ->> 'platform')::boolean
            AND k.sms_opt_in IS DISTINCT FROM false)
           OR (NOT (pr.sms ->> 'opted_out')::boolean
               AND coalesce((b.sms ->> 'opted_out')::boolean AND (b.sms ->> 'platform')::boolean, false)
               AND k.sms_opt_in IS FALSE))
    RETURNING k.id
),
{{/k.sms_opt_in}}
receipts AS (
    -- Each message's highest-ranked receipt of this batch.
    SELECT DISTINCT ON (a.delivery_id) a.delivery_id, a.status, a.error_code, a.occurred_at
    FROM applied a
    WHERE a.kind = 'message.status' AND a.delivery_id IS NOT NULL AND a.status IS NOT NULL
    ORDER BY a.delivery_id, delivery.receipt_rank(a.status) DESC, a.occurred_at, a.ord
),
status_moved AS (
    -- Monotonic: a status only moves up its rank, so receipts in any order end at the highest.
    UPDATE delivery.message_state s
    SET delivery_status = r.status,
        delivery_status_at = r.occurred_at,
        delivery_error_code = r.error_code
    FROM receipts r
    WHERE s.id = r.delivery_id
      AND delivery.receipt_rank(r.status) > delivery.receipt_rank(s.delivery_status)
    RETURNING s.id
)
SELECT e.ord,
       CASE WHEN a.ord IS NOT NULL THEN a.outcome
            WHEN c.outcome = 'wait' THEN 'wait'
            ELSE 'duplicate' END AS outcome,
       s.source || '-' || s.source_id AS message_id
FROM ev e
LEFT JOIN applied a ON a.ord = e.ord
LEFT JOIN classified c ON c.ord = e.ord
LEFT JOIN delivery.message_state s ON s.id = coalesce(a.delivery_id, c.delivery_id);

-- name: register_contractor_phones
-- Whose number is it, learnt before we text them: pairs (contractor, keyed hash of their
-- number as the platform stores it) added to delivery.contractor_phone where absent, and the
-- keyword and DND opt-outs recorded `unmatched` from those numbers applied. evaluate runs it
-- for each page before the queue-time verdict (source 'evaluate'); `proactive-delivery
-- inbound backfill-phones` for each page of every contractor (source 'backfill'), then once
-- with `every_number` (and no pairs). One statement either way, whatever the page's size.
--
-- A pair already in the directory is left as it is: a number deliver texted for the
-- contractor keeps its row (source 'send'), and deliver still drops the contractor's other
-- numbers when it texts them at one. The pairs the statement added are where unmatched
-- opt-outs are looked for (`every_number`: every pair of the directory, the backfill's last
-- step), so a page whose numbers are all known reads nothing of delivery.inbound_event.
--
-- An unmatched opt-out: a keyword STOP (or a DND opt-out) that came from a number no
-- contractor had. The latest such event of each number is applied, if it is an opt-out, as
-- the processor applies one (the same merge: an entry newer than the stored one wins; an
-- older STOP never undoes a newer START). A START recorded later from the same number means
-- the contractor's last word was to opt in: nothing is applied. With `write_sms_opt_in` (and
-- the column) the platform's contractors.sms_opt_in becomes false with it, as the processor
-- writes it for a STOP it matches at once (the entry says so: a START lifts it again).
WITH given AS (
    SELECT DISTINCT decode(g.phone_hash, 'hex') AS phone_hash, g.contractor_id
    FROM unnest(%(contractor_ids)s::bigint[], %(phone_hashes)s::text[]) AS g(contractor_id, phone_hash)
),
registered AS (
    -- Only the pairs not there (a plain index probe each: the common case writes nothing), in
    -- key order, so two runs adding overlapping pages wait for each other, never deadlock.
    INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source)
    SELECT g.phone_hash, g.contractor_id, %(source)s
    FROM given g
    WHERE NOT EXISTS (
        SELECT 1 FROM delivery.contractor_phone d
        WHERE d.phone_hash = g.phone_hash AND d.contractor_id = g.contractor_id
    )
    ORDER BY g.phone_hash, g.contractor_id
    ON CONFLICT (phone_hash, contractor_id) DO NOTHING
    RETURNING phone_hash, contractor_id
),
scope AS (
    SELECT r.phone_hash, r.contractor_id FROM registered r
    UNION ALL
    SELECT d.phone_hash, d.contractor_id FROM delivery.contractor_phone d WHERE %(every_number)s
),
latest AS (
    SELECT DISTINCT ON (i.phone_hash) i.phone_hash, i.action, i.occurred_at,
           CASE WHEN i.keyword LIKE 'DND:%%' THEN 'dnd' ELSE 'keyword' END AS source
    FROM delivery.inbound_event i
    WHERE EXISTS (SELECT 1 FROM scope)
      AND i.outcome = 'unmatched' AND i.action IN ('opt_out', 'opt_in') AND i.phone_hash IS NOT NULL
      AND i.phone_hash IN (SELECT s.phone_hash FROM scope s)
    ORDER BY i.phone_hash, i.occurred_at DESC, i.id DESC
),
change AS (
    SELECT DISTINCT ON (s.contractor_id) s.contractor_id,
           jsonb_build_object('sms', jsonb_build_object(
               'opted_out', true, 'source', l.source, 'at', l.occurred_at,
               'platform', %(write_sms_opt_in)s
                           AND {{#k.sms_opt_in}}true{{/k.sms_opt_in}}{{^k.sms_opt_in}}false{{/k.sms_opt_in}}))
               AS consent
    FROM latest l
    JOIN scope s ON s.phone_hash = l.phone_hash
    WHERE l.action = 'opt_out'
    ORDER BY s.contractor_id, l.occurred_at DESC
),
preferences AS (
    INSERT INTO delivery.contractor_preferences AS p
        (contractor_id, opted_out_channels, opted_out_at, opt_out_source, opt_out_sources)
    SELECT c.contractor_id, ARRAY['sms'], now(), c.consent -> 'sms' ->> 'source', c.consent
    FROM change c
    ON CONFLICT (contractor_id) DO UPDATE
    SET opt_out_sources = delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, '{}'),
        opted_out_channels = delivery.opted_out_channels_after(
            p.opted_out_channels, p.opt_out_sources,
            delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, '{}')),
        opted_out_at = now(),
        opt_out_source = EXCLUDED.opt_out_source,
        updated_at = now()
    WHERE delivery.merge_opt_out_sources(p.opt_out_sources, EXCLUDED.opt_out_sources, '{}')
              IS DISTINCT FROM p.opt_out_sources
    RETURNING p.contractor_id, p.opt_out_sources -> 'sms' AS sms
)
{{#k.sms_opt_in}}
, platform_consent AS (
    -- contractors.sms_opt_in follows the opt-out just applied (nothing else of the row).
    UPDATE contractors k
    SET sms_opt_in = false
    FROM preferences pr
    WHERE %(write_sms_opt_in)s
      AND k.id = pr.contractor_id
      AND (pr.sms ->> 'opted_out')::boolean AND (pr.sms ->> 'platform')::boolean
      AND k.sms_opt_in IS DISTINCT FROM false
    RETURNING k.id
)
{{/k.sms_opt_in}}
SELECT 'registered' AS what, r.contractor_id FROM registered r
UNION ALL
SELECT 'opted_out', pr.contractor_id FROM preferences pr;
