"""The management REST API (/api/v1/): keys, admin tokens, members, audit log, tenant
settings, and staff's catalog and tenants. Views are thin: access control comes from
apps.tenants.access, reads from the apps' selectors, writes from their services."""
