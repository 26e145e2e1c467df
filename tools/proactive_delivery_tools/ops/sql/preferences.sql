-- Named queries for the operator's `prefs` commands (cli/prefs.py), rendered for the
-- platform's schema like the runtime's own (same placeholders and table aliases).

-- name: get_preferences
-- What the pipeline resolves a contractor's delivery rules from, as message_facts reads it
-- (sql/queries.sql of the runtime): our preference row (pref_*, NULL without one) and the
-- platform's own contact rules (NULL where its schema has no such column). No row: the
-- platform has no such contractor.
SELECT k.id AS contractor_id,
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
       p.suppressed_channels AS pref_suppressed_channels,
       p.opted_out_at, p.opt_out_source, p.opt_out_sources
FROM contractors k
LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = k.id
WHERE k.id = %(contractor_id)s;

-- name: upsert_preferences
-- One statement: create the row or change only the values given (NULL = leave as is).
-- --opt-in clears every opt-out, including per-channel ones a provider, a keyword or a DND
-- event recorded (each channel's entry then says the operator opted in, now, so an older STOP
-- processed late does not undo it), and the channels a provider reported undeliverable. Only for
-- a contractor the platform has: otherwise nothing is written and no row comes back. The
-- command then shows the values in effect with get_preferences.
INSERT INTO delivery.contractor_preferences AS p
    (contractor_id, channels, timezone, quiet_start, quiet_end, max_per_day,
     opted_out, opted_out_at, opt_out_source)
SELECT c.id, %(channels)s::text[], %(timezone)s, %(quiet_start)s::time,
       %(quiet_end)s::time, %(max_per_day)s::integer, coalesce(%(opted_out)s::boolean, false),
       CASE WHEN %(opted_out)s::boolean IS NOT NULL THEN now() END,
       CASE WHEN %(opted_out)s::boolean IS NOT NULL THEN 'operator' END
FROM contractors c
WHERE c.id = %(contractor_id)s
ON CONFLICT (contractor_id) DO UPDATE
SET channels = coalesce(%(channels)s::text[], p.channels),
    timezone = coalesce(%(timezone)s, p.timezone),
    quiet_start = coalesce(%(quiet_start)s::time, p.quiet_start),
    quiet_end = coalesce(%(quiet_end)s::time, p.quiet_end),
    max_per_day = coalesce(%(max_per_day)s::integer, p.max_per_day),
    opted_out = coalesce(%(opted_out)s::boolean, p.opted_out),
    opted_out_channels = CASE WHEN %(opted_out)s::boolean IS FALSE THEN '{}'::text[] ELSE p.opted_out_channels END,
    opt_out_sources = CASE
        WHEN %(opted_out)s::boolean IS FALSE THEN coalesce(
            (SELECT jsonb_object_agg(e.key, jsonb_build_object(
                        'opted_out', false, 'source', 'operator', 'at', now(), 'platform', false))
             FROM jsonb_each(p.opt_out_sources) AS e),
            '{}'::jsonb)
        ELSE p.opt_out_sources END,
    suppressed_channels = CASE WHEN %(opted_out)s::boolean IS FALSE THEN '{}'::jsonb ELSE p.suppressed_channels END,
    opted_out_at = CASE WHEN %(opted_out)s::boolean IS NULL THEN p.opted_out_at ELSE now() END,
    opt_out_source = CASE WHEN %(opted_out)s::boolean IS NULL THEN p.opt_out_source ELSE 'operator' END,
    updated_at = now()
RETURNING contractor_id;
