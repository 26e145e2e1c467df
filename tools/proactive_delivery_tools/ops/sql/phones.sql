-- Named queries of `proactive-delivery inbound backfill-phones` (cli/inbound.py): the
-- contractor <-> number directory (delivery.contractor_phone) filled from the platform's
-- contractors.phone, so a STOP or a reply from a contractor we have not texted yet finds them.
-- Numbers are hashed by the command (HMAC-SHA256 under the phone hash key); none is stored
-- in clear.

-- name: contractor_phones_page
-- One keyset page of the platform's contractors with a phone.
SELECT k.id::bigint AS contractor_id, k.phone::text AS phone
FROM contractors k
WHERE k.id > %(after_id)s AND k.phone IS NOT NULL AND k.phone <> ''
ORDER BY k.id
LIMIT %(page_size)s;

-- name: backfill_phone_directory
-- One page of hashed numbers into the directory. A number deliver already recorded for the
-- contractor keeps its row (source 'send'); one of theirs it has not texted is added too.
INSERT INTO delivery.contractor_phone (phone_hash, contractor_id, source)
SELECT decode(b.phone_hash, 'hex'), b.contractor_id, 'backfill'
FROM jsonb_to_recordset(%(rows)s::jsonb) AS b(contractor_id bigint, phone_hash text)
ON CONFLICT (phone_hash, contractor_id) DO NOTHING
RETURNING contractor_id;

-- name: apply_unmatched_opt_outs
-- A keyword STOP (or a DND opt-out) that came from a number no contractor had in the
-- directory was recorded `unmatched`. Once the backfill knows whose number it is, the latest
-- such event per number is applied, if it is an opt-out, as the processor applies one (the
-- same merge: an entry newer than the stored one wins). A START recorded later from the same
-- number means the contractor's last word was to opt in: nothing is applied. The platform's
-- contractors.sms_opt_in is left as it is (the event is old); our opt-out holds either way.
WITH latest AS (
    SELECT DISTINCT ON (i.phone_hash) i.phone_hash, i.action, i.occurred_at,
           CASE WHEN i.keyword LIKE 'DND:%%' THEN 'dnd' ELSE 'keyword' END AS source
    FROM delivery.inbound_event i
    WHERE i.outcome = 'unmatched' AND i.action IN ('opt_out', 'opt_in') AND i.phone_hash IS NOT NULL
    ORDER BY i.phone_hash, i.occurred_at DESC, i.id DESC
),
change AS (
    SELECT DISTINCT ON (d.contractor_id) d.contractor_id,
           jsonb_build_object('sms', jsonb_build_object(
               'opted_out', true, 'source', l.source, 'at', l.occurred_at, 'platform', false)) AS consent
    FROM latest l
    JOIN delivery.contractor_phone d ON d.phone_hash = l.phone_hash
    WHERE l.action = 'opt_out'
    ORDER BY d.contractor_id, l.occurred_at DESC
)
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
RETURNING contractor_id;
