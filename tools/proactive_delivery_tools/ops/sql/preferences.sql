-- Named queries for the operator's `prefs` commands (prefs_cli.py).

-- name: get_preferences
-- No row: the platform has no such contractor. has_row false: a contractor without
-- preferences (the defaults apply).
SELECT c.id AS contractor_id, p.contractor_id IS NOT NULL AS has_row, p.channels,
       coalesce(p.opted_out, false) AS opted_out, coalesce(p.opted_out_channels, '{}') AS opted_out_channels,
       p.opted_out_at, p.opt_out_source, p.timezone, p.quiet_start, p.quiet_end, p.max_per_day,
       p.updated_at
FROM contractors c
LEFT JOIN delivery.contractor_preferences p ON p.contractor_id = c.id
WHERE c.id = %(contractor_id)s;

-- name: upsert_preferences
-- One statement: create the row or change only the values given (NULL = leave as is).
-- --opt-in clears every opt-out, including per-channel ones a provider recorded. Only for
-- a contractor the platform has: otherwise nothing is written and no row comes back.
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
    opted_out_at = CASE WHEN %(opted_out)s::boolean IS NULL THEN p.opted_out_at ELSE now() END,
    opt_out_source = CASE WHEN %(opted_out)s::boolean IS NULL THEN p.opt_out_source ELSE 'operator' END,
    updated_at = now()
RETURNING contractor_id, true AS has_row, channels, opted_out, opted_out_channels, opted_out_at,
          opt_out_source, timezone, quiet_start, quiet_end, max_per_day, updated_at;
