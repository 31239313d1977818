"""
twisted.cred checkers shared by every daemon of the suite.

  - L{suite.cred.tokens}: permissions (READ < WRITE < ADMIN), bearer-token
    credentials, L{TokenChecker <suite.cred.tokens.TokenChecker>},
    L{Principal <suite.cred.tokens.Principal>} and a realm;
  - L{suite.cred.basic}: L{StaticPasswordChecker
    <suite.cred.basic.StaticPasswordChecker>} for one configured user/password;
  - L{suite.cred.ldap}: L{LDAPBindChecker <suite.cred.ldap.LDAPBindChecker>},
    a simple bind through ldaptor with an optional group filter;
  - L{suite.cred.web}: C{requireBasicAuth} and C{requireBearer} resource
    wrappers answering JSON 401/403/429/503;
  - L{suite.cred.limits}: L{FailureLimiter
    <suite.cred.limits.FailureLimiter>}, throttling of failed attempts;
  - L{suite.cred.interfaces}, L{suite.cred.errors}.

Configuration for each checker is described in docs/auth.md.
"""

__all__ = ["basic", "errors", "interfaces", "ldap", "limits", "tokens", "web"]
