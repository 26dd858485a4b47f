//! The requester or admin principal a request is attributed to.

use jitgate_rules::route::Principal;

/// Who is asking, and how we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (`sub`, the trusted user header, the certificate's name, the API token's
    /// name); `None` only for anonymous requesters.
    pub user: Option<String>,
    /// Group memberships, as the identity source states them.
    pub groups: Vec<String>,
    /// Where the identity came from.
    pub via: Via,
}

/// The source of an [`Identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A validated `Authorization: Bearer` JWT.
    Jwt,
    /// `[identity.headers]` set by a trusted proxy.
    TrustedHeaders,
    /// A verified TLS client certificate (the gateway builds these with
    /// [`Identity::client_cert`]).
    ClientCert,
    /// A static admin API token.
    ApiToken,
    /// No credentials.
    Anonymous,
}

impl Identity {
    /// The requester without credentials.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            groups: Vec::new(),
            via: Via::Anonymous,
        }
    }

    /// An identity taken from a verified TLS client certificate.
    pub fn client_cert(user: String, groups: Vec<String>) -> Self {
        Self {
            user: Some(user),
            groups,
            via: Via::ClientCert,
        }
    }

    /// Whether this identity is `user:NAME` or belongs to `group:NAME`. Exact, case-sensitive
    /// comparison: identity providers define the spelling. Anonymous is never a member.
    pub fn is_member(&self, principal: &Principal) -> bool {
        match principal {
            Principal::User(name) => self.user.as_deref() == Some(name.as_str()),
            Principal::Group(name) => self.user.is_some() && self.groups.iter().any(|g| g == name),
        }
    }

    /// Whether no credentials were presented.
    pub fn is_anonymous(&self) -> bool {
        self.via == Via::Anonymous
    }

    /// The name recorded on tickets and approval tokens: the user, or `anonymous`.
    pub fn subject(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let id = Identity {
            user: Some("alice".into()),
            groups: vec!["oncall".into()],
            via: Via::Jwt,
        };
        assert!(id.is_member(&Principal::User("alice".into())));
        assert!(!id.is_member(&Principal::User("Alice".into())));
        assert!(id.is_member(&Principal::Group("oncall".into())));
        assert!(!id.is_member(&Principal::Group("platform".into())));
        let anon = Identity::anonymous();
        assert!(!anon.is_member(&Principal::User("anonymous".into())));
        assert_eq!(anon.subject(), "anonymous");
        assert!(anon.is_anonymous());
    }
}
