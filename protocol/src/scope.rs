//! API key scopes: `push:GLOB`, `pull:GLOB`, `delete:GLOB` and `admin`, and the checks
//! against package names.

use std::{fmt, str::FromStr};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// What a request wants to do to a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Push, Action::Pull, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
            Self::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scope, as written on the command line and stored with a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `ACTION:GLOB`: the action on packages whose name matches the glob.
    Allow { action: Action, pattern: String },
    /// `admin`: everything, including key management and GC.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope `{0}` is not valid; use push:GLOB, pull:GLOB, delete:GLOB or admin")]
    Syntax(String),
    #[error("scope `{scope}` has an invalid glob: {reason}")]
    Glob { scope: String, reason: String },
    #[error("a key needs at least one scope")]
    Empty,
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "admin" {
            return Ok(Self::Admin);
        }
        let (action, pattern) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::Syntax(s.to_owned()))?;
        let action = match action {
            "push" => Action::Push,
            "pull" => Action::Pull,
            "delete" => Action::Delete,
            _ => return Err(ScopeError::Syntax(s.to_owned())),
        };
        let allowed = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(
                    c,
                    '.' | '_' | '-' | '*' | '?' | '[' | ']' | '{' | '}' | ',' | '!'
                )
        };
        if pattern.is_empty() || pattern.len() > 128 || !pattern.chars().all(allowed) {
            return Err(ScopeError::Syntax(s.to_owned()));
        }
        Glob::new(pattern).map_err(|e| ScopeError::Glob {
            scope: s.to_owned(),
            reason: e.kind().to_string(),
        })?;
        Ok(Self::Allow {
            action,
            pattern: pattern.to_owned(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Allow { action, pattern } => write!(f, "{action}:{pattern}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key's scopes, compiled for matching.
#[derive(Clone, Debug)]
pub struct Scopes {
    list: Vec<Scope>,
    admin: bool,
    sets: [GlobSet; 3],
}

impl Scopes {
    pub fn new(list: Vec<Scope>) -> Result<Self, ScopeError> {
        if list.is_empty() {
            return Err(ScopeError::Empty);
        }
        let mut builders = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        let mut admin = false;
        for scope in &list {
            match scope {
                Scope::Admin => admin = true,
                Scope::Allow { action, pattern } => {
                    let glob = Glob::new(pattern).map_err(|e| ScopeError::Glob {
                        scope: scope.to_string(),
                        reason: e.kind().to_string(),
                    })?;
                    builders[index(*action)].add(glob);
                }
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| ScopeError::Glob {
                scope: String::new(),
                reason: e.kind().to_string(),
            })
        };
        let [a, b, c] = builders;
        Ok(Self {
            list,
            admin,
            sets: [build(a)?, build(b)?, build(c)?],
        })
    }

    /// Scopes for unauthenticated clients when the node allows anonymous pulls.
    pub fn anonymous_pull() -> Self {
        #[allow(clippy::expect_used, reason = "`pull:*` is a constant, valid scope")]
        Self::new(vec![Scope::Allow {
            action: Action::Pull,
            pattern: "*".to_owned(),
        }])
        .expect("`pull:*` compiles")
    }

    pub fn list(&self) -> &[Scope] {
        &self.list
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn allows(&self, action: Action, package: &str) -> bool {
        self.admin || self.sets[index(action)].is_match(package)
    }

    /// Whether the key can do `action` to at least some package.
    pub fn has_any(&self, action: Action) -> bool {
        self.admin || !self.sets[index(action)].is_empty()
    }
}

fn index(action: Action) -> usize {
    match action {
        Action::Push => 0,
        Action::Pull => 1,
        Action::Delete => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Scopes {
        Scopes::new(list.iter().map(|s| s.parse().unwrap()).collect()).unwrap()
    }

    #[test]
    fn globs_match_package_names() {
        let s = scopes(&["push:my-*", "pull:*"]);
        assert!(s.allows(Action::Push, "my-api"));
        assert!(!s.allows(Action::Push, "your-api"));
        assert!(s.allows(Action::Pull, "anything"));
        assert!(!s.allows(Action::Delete, "my-api"));
        assert!(!s.is_admin());
        assert!(s.has_any(Action::Push));
        assert!(!s.has_any(Action::Delete));
    }

    #[test]
    fn admin_allows_everything() {
        let s = scopes(&["admin"]);
        for a in Action::ALL {
            assert!(s.allows(a, "x"));
        }
    }

    #[test]
    fn anonymous_pull_is_pull_star() {
        let s = Scopes::anonymous_pull();
        assert!(s.allows(Action::Pull, "x"));
        assert!(!s.allows(Action::Push, "x"));
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            scopes(&["delete:{a,b}-*"]).list()[0].to_string(),
            "delete:{a,b}-*"
        );
        for bad in [
            "push", "push:", "write:*", "push:A*", "push:a/b", "pull:[", "admin:*",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert_eq!(Scopes::new(vec![]).unwrap_err(), ScopeError::Empty);
    }
}
