"""Fault injection for the suite's own server processes: launchers that run the real
platform with one failure planted at a named point, so a test can watch a crash happen
where only a crash can tell (never imported by the platform itself)."""
