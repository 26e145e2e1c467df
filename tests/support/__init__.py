"""What the tests share, imported explicitly by the tests that use it: `policy` (plain
values, nothing that reaches a network or a database: unit tests import it), `db` (rows of a
real PostgreSQL, for the integration and end-to-end tiers)."""
