from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APITokenScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.access.authentication.APITokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "description": "A Fleetgate API token: `Bearer fgt_…`"}


class OIDCBearerScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.access.oidc.authentication.OIDCBearerAuthentication"
    name = "oidcBearer"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An ID token (or JWT access token) from the configured OpenID Connect provider",
        }


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "clusters.agent_auth.AgentAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer",
                "description": "A pull-mode agent's credential: `Bearer fga_a_…` (only on /api/agent/v1/)"}


class AgentBootstrapScheme(OpenApiAuthenticationExtension):
    target_class = "clusters.agent_auth.BootstrapAuthentication"
    name = "agentBootstrapToken"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer",
                "description": "A one-time bootstrap token: `Bearer fga_b_…` (only for register)"}
