-- Named queries of `proactive-delivery inbound backfill-phones` (cli/inbound.py): the
-- contractor <-> number directory (delivery.contractor_phone) filled from the platform's
-- contractors.phone, so a STOP or a reply from a contractor we have not texted yet finds them.
-- Numbers are hashed by the command (HMAC-SHA256 under the phone hash key); none is stored
-- in clear. The pages are written, and the unmatched opt-outs applied, by the statement
-- evaluate uses too (the layer's sql/inbound.sql, register_contractor_phones).

-- name: contractor_phones_page
-- One keyset page of the platform's contractors with a phone.
SELECT k.id::bigint AS contractor_id, k.phone::text AS phone
FROM contractors k
WHERE k.id > %(after_id)s AND k.phone IS NOT NULL AND k.phone <> ''
ORDER BY k.id
LIMIT %(page_size)s;
