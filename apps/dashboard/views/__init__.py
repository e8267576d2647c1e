"""Dashboard views: thin, they resolve the tenant and role (apps.dashboard.access), call
the apps' services and selectors, and render templates/dashboard/."""
