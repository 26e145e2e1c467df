-- The way back (docs/inbound.md): what the inbound processor applies, and what deliver records
-- so that a reply, a keyword opt-out or a delivery receipt finds its contractor and message.
-- Additive and re-runnable, like every migration here. No phone number is stored in clear:
-- a number is kept as its keyed hash (HMAC-SHA256 of the E.164 number under PHONE_HASH_KEY).

-- Every inbound event the processor applied, once, by its identity (the edge's
-- twilio:<MessageSid>..., events:<webhook-id>, ses:<EventBridge id>): a provider's retry, a
-- duplicate SQS delivery or a DLQ replay finds its identity here and changes nothing. The
-- row says what the event was linked to, or why nothing (outcome: linked, unmatched,
-- ambiguous, outside_window, opted_out, opted_in, kept_operator_opt_out, help, recorded,
-- unknown_message). The text of a reply is not kept here: it goes to the platform's column.
CREATE TABLE IF NOT EXISTS delivery.inbound_event (
    id             bigserial   PRIMARY KEY,
    identity       text        NOT NULL,
    kind           text        NOT NULL,
    provider       text,
    -- When the edge received it, and when it happened (the provider's time, else received_at).
    received_at    timestamptz NOT NULL,
    occurred_at    timestamptz NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    -- The sender's number as its keyed hash; the contractors it belongs to.
    phone_hash     bytea,
    contractor_ids bigint[]    NOT NULL DEFAULT '{}',
    -- reply, opt_out, opt_in, help, receipt
    action         text        NOT NULL,
    keyword        text,
    -- delivery.message_state.id of the message a reply answers or a receipt is about.
    delivery_id    bigint,
    status         text,
    error_code     text,
    outcome        text        NOT NULL,
    CONSTRAINT inbound_event_identity_key UNIQUE (identity)
);

-- "Has anyone answered this message?" (IGNORED_RUN_PAUSE) and a message's replies.
CREATE INDEX IF NOT EXISTS inbound_event_delivery_idx
    ON delivery.inbound_event (delivery_id)
    WHERE delivery_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbound_event_applied_idx ON delivery.inbound_event (applied_at);

-- The number an SMS went to, as its keyed hash: a reply is linked to the most recent SMS sent
-- to the number it came from (an index range scan, never a scan of the contractors).
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS phone_hash bytea;
CREATE INDEX IF NOT EXISTS message_state_phone_sent_idx
    ON delivery.message_state (phone_hash, sent_at)
    WHERE phone_hash IS NOT NULL AND state = 'sent';

-- Delivery receipts: what reached the phone or the inbox, monotonic by rank (sent <
-- undelivered, failed < delivered < read). NULL on a sent message means no receipt yet: read
-- it as 'sent'. Receipts find their message by provider reference (Twilio's MessageSid,
-- GHL's messageId, SES's MessageId) or by our identity.
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS delivery_status text;
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS delivery_status_at timestamptz;
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS delivery_error_code text;
CREATE INDEX IF NOT EXISTS message_state_provider_ref_idx
    ON delivery.message_state (provider_ref)
    WHERE provider_ref IS NOT NULL;

-- Whose number is it: the contractor a number was last texted for (kept current by deliver
-- when it sends an SMS: the contractor's other numbers are dropped), or found by the
-- operator's `proactive-delivery inbound backfill-phones` from contractors.phone. A keyword
-- opt-out from a number applies to every contractor it belongs to.
CREATE TABLE IF NOT EXISTS delivery.contractor_phone (
    phone_hash    bytea       NOT NULL,
    contractor_id bigint      NOT NULL,
    -- send (deliver texted the contractor at it) | backfill (from contractors.phone)
    source        text        NOT NULL,
    -- When the pair was recorded (or a backfilled one first texted). A send to a number
    -- already recorded writes nothing: the common case costs no write.
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contractor_phone_pkey PRIMARY KEY (phone_hash, contractor_id)
);
CREATE INDEX IF NOT EXISTS contractor_phone_contractor_idx ON delivery.contractor_phone (contractor_id);

-- Who opted a contractor out of each channel, and when (the one opt_out_source column says
-- it for the row as a whole): channel -> {"opted_out": bool, "source": keyword | dnd | twilio
-- | complaint | operator | unknown, "at": the event's time, "platform": we set
-- contractors.sms_opt_in = false with it}. The entry stays after an opt-in (opted_out false),
-- so an older event processed late never undoes a newer one. START lifts only an entry a
-- keyword, a provider or a DND event set.
ALTER TABLE delivery.contractor_preferences
    ADD COLUMN IF NOT EXISTS opt_out_sources jsonb NOT NULL DEFAULT '{}'::jsonb;
-- Channels a provider reported undeliverable for good: channel -> {"reason", "code",
-- "provider", "at", "phone_hash" (the number it failed for), "message_id"}. The policy skips
-- a suppressed channel (with its reason) for the next of the contractor's order; a phone
-- channel's suppression holds while the contractor's number is the one that failed.
ALTER TABLE delivery.contractor_preferences
    ADD COLUMN IF NOT EXISTS suppressed_channels jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Per-channel opt-outs recorded before this migration: only the provider's (Twilio 21610)
-- could be per channel, under the row's one source; an operator's later change of the row
-- makes it the operator's, which START does not lift.
UPDATE delivery.contractor_preferences p
SET opt_out_sources = (
    SELECT jsonb_object_agg(
        c, jsonb_build_object('opted_out', true, 'source', coalesce(p.opt_out_source, 'unknown'),
                              'at', p.opted_out_at, 'platform', false))
    FROM unnest(p.opted_out_channels) AS c
)
WHERE p.opted_out_channels <> '{}' AND p.opt_out_sources = '{}'::jsonb;

-- A receipt's rank: a status only ever moves up (a late 'sent' never overwrites 'delivered').
CREATE OR REPLACE FUNCTION delivery.receipt_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'sent' THEN 1
        WHEN 'undelivered' THEN 2
        WHEN 'failed' THEN 2
        WHEN 'delivered' THEN 3
        WHEN 'read' THEN 4
        ELSE 0
    END
$$;

-- The per-channel entries after `incoming` (channel -> entry) meets `stored`: an entry newer
-- than the stored one replaces it, except an opt-in over an opt-out whose source is not in
-- `liftable` (an operator's stays). Channels not in `incoming` are left as they are. STABLE:
-- it reads the entries' times (ISO-8601 with their offset) as timestamptz.
CREATE OR REPLACE FUNCTION delivery.merge_opt_out_sources(stored jsonb, incoming jsonb, liftable text[])
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(stored, '{}'::jsonb) || coalesce(
        (SELECT jsonb_object_agg(i.key, i.value)
         FROM jsonb_each(coalesce(incoming, '{}'::jsonb)) AS i
         WHERE (i.value ->> 'at')::timestamptz
                   > coalesce((stored -> i.key ->> 'at')::timestamptz, '-infinity'::timestamptz)
           AND ((i.value ->> 'opted_out')::boolean
                OR NOT coalesce((stored -> i.key ->> 'opted_out')::boolean, false)
                OR (stored -> i.key ->> 'source') = ANY (liftable))),
        '{}'::jsonb)
$$;

-- The opted-out channel list after the entries changed from `before` to `after`: a channel
-- whose entry changed is added (opted out) or removed (opted in); the others stay.
CREATE OR REPLACE FUNCTION delivery.opted_out_channels_after(channels text[], before jsonb, after jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(c ORDER BY c), '{}'::text[])
    FROM (
        SELECT c
        FROM unnest(coalesce(channels, '{}'::text[])) AS c
        WHERE NOT (after ? c AND (after -> c) IS DISTINCT FROM (before -> c)
                   AND NOT (after -> c ->> 'opted_out')::boolean)
        UNION
        SELECT e.key
        FROM jsonb_each(coalesce(after, '{}'::jsonb)) AS e
        WHERE (e.value ->> 'opted_out')::boolean AND e.value IS DISTINCT FROM (before -> e.key)
    ) AS kept(c)
$$;

-- The source of an opt-out the change from `before` to `after` made (for the row's
-- opted_out_at / opt_out_source), or NULL when it made none.
CREATE OR REPLACE FUNCTION delivery.new_opt_out_source(before jsonb, after jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT min(e.value ->> 'source')
    FROM jsonb_each(coalesce(after, '{}'::jsonb)) AS e
    WHERE (e.value ->> 'opted_out')::boolean AND e.value IS DISTINCT FROM (before -> e.key)
$$;
