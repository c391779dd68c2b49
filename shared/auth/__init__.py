"""Authentication (OAuth2 bearer JWTs) and role-based authorisation."""

from shared.auth.dependencies import CurrentUser, require_roles
from shared.auth.principal import Principal, Role
from shared.auth.tokens import TokenVerifier, mint_dev_token

__all__ = ["CurrentUser", "Principal", "Role", "TokenVerifier", "mint_dev_token", "require_roles"]
