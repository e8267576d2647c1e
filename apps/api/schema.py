"""OpenAPI (drf-spectacular): how the admin token authentication is described."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AdminTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.tenants.authentication.AdminTokenAuthentication"
    name = "adminToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tga-…",
            "description": "A tenant admin token (never an inference key tg-…).",
        }
