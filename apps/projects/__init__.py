"""Projects: the level between a tenant and its keys (OpenAI's word).

A tenant has projects; exactly one is its default (made with the tenant, and by migration
for tenants older than projects). Every key belongs to one project of its tenant (a key
saved without one goes to the default). A project narrows what its keys may do: its model
allowlist (the key's convention: ``[]`` no models, ``["*"]`` every model; a key may use
a model both lists allow), its limits and budget (LimitFields, like keys and tenants),
per-model limits (``model_limits``) and limits per end user (``end_user_limits``), all
enforced in the admission round trip with the key's and tenant's (apps/limits).

``models``
    ``Project`` and ``ProjectMembership`` (a member's role in one project, viewer or
    admin, on top of the tenant role).
``signals``
    A new tenant gets its default project; saving or deleting a project drops its keys
    from every gateway's cache (they carry the project's limits and allowlist).
``selectors``
    Reads: a tenant's default project.

Imports: tenants and limits; keys import this app (``ApiKey.project``), never the reverse
at module level.
"""
