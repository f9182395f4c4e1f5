//! The client configuration file: named registries with URL, key and the default flag.
//! `niso.dev` is built in and is the default until another registry is marked default.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

pub const BUILTIN_NAME: &str = "niso.dev";
pub const BUILTIN_URL: &str = "https://registry.niso.dev";

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name of the default registry; absent means `niso.dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryEntry>,
    /// Named groups of registries: `--registry GROUP` pulls from the nearest member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub registries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A registry chosen for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Configured name, or the URL itself when given as one.
    pub name: String,
    pub url: String,
    pub key: Option<String>,
}

impl ClientConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("client configuration {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
        }
    }

    /// Writes the file atomically with mode 0600: it holds API keys.
    ///
    /// The file is edited, not regenerated: the user's comments, order and layout stay, and
    /// only the values that changed are written.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut doc = match std::fs::read_to_string(path) {
            Ok(text) => text
                .parse::<toml_edit::DocumentMut>()
                .with_context(|| format!("client configuration {} is not valid", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml_edit::DocumentMut::new(),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        self.edit(&mut doc);
        crate::private_file::write(path, doc.to_string().as_bytes())
    }

    /// Makes `doc` say what `self` says, touching only what differs.
    fn edit(&self, doc: &mut toml_edit::DocumentMut) {
        use toml_edit::{Item, Table, value};
        match &self.default {
            Some(name) if doc.get("default").and_then(Item::as_str) != Some(name) => {
                doc["default"] = value(name.as_str());
            }
            Some(_) => {}
            None => {
                doc.remove("default");
            }
        }
        let registries = doc.entry("registries").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let Some(registries) = registries.as_table_like_mut() else {
            return;
        };
        let stale: Vec<String> = registries
            .iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| !self.registries.contains_key(k))
            .collect();
        for name in stale {
            registries.remove(&name);
        }
        for (name, entry) in &self.registries {
            let item = registries
                .entry(name)
                .or_insert_with(|| Item::Table(Table::new()));
            let Some(t) = item.as_table_like_mut() else {
                continue;
            };
            if t.get("url").and_then(Item::as_str) != Some(entry.url.as_str()) {
                t.insert("url", value(entry.url.as_str()));
            }
            match &entry.key {
                Some(key) if t.get("key").and_then(Item::as_str) != Some(key.as_str()) => {
                    t.insert("key", value(key.as_str()));
                }
                Some(_) => {}
                None => {
                    t.remove("key");
                }
            }
        }
    }

    pub fn default_name(&self) -> &str {
        self.default.as_deref().unwrap_or(BUILTIN_NAME)
    }

    /// Every registry, the built-in one first, then by name.
    pub fn all(&self) -> Vec<(String, RegistryEntry)> {
        let mut out = vec![(
            BUILTIN_NAME.to_owned(),
            self.registries
                .get(BUILTIN_NAME)
                .cloned()
                .unwrap_or(RegistryEntry {
                    url: BUILTIN_URL.to_owned(),
                    key: None,
                }),
        )];
        out.extend(
            self.registries
                .iter()
                .filter(|(n, _)| n.as_str() != BUILTIN_NAME)
                .map(|(n, e)| (n.clone(), e.clone())),
        );
        out
    }

    /// Resolves `NAME|URL` (or the default when `None`). `env_key` overrides the stored key.
    pub fn target(&self, which: Option<&str>, env_key: Option<&str>) -> anyhow::Result<Target> {
        let which = which.unwrap_or_else(|| self.default_name());
        let mut target = if is_url(which) {
            let url = normalize_url(which);
            let known = self
                .all()
                .into_iter()
                .find(|(_, e)| normalize_url(&e.url) == url);
            Target {
                name: known
                    .as_ref()
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| url.clone()),
                key: known.and_then(|(_, e)| e.key),
                url,
            }
        } else {
            let Some((name, entry)) = self.all().into_iter().find(|(n, _)| n == which) else {
                let names: Vec<String> = self.all().into_iter().map(|(n, _)| n).collect();
                bail!(
                    "no registry named `{which}` (configured: {}); add it with `niso registry add {which} URL`",
                    names.join(", ")
                );
            };
            Target {
                name,
                url: normalize_url(&entry.url),
                key: entry.key,
            }
        };
        if let Some(key) = env_key {
            if let Err(e) = niso_protocol::api_key::ApiKey::parse(key) {
                bail!(
                    "NISO_KEY is not a niso API key ({e}); unset it to use the key saved for `{}`",
                    target.name
                );
            }
            target.key = Some(key.to_owned());
        }
        Ok(target)
    }

    /// The members of group `name`, if it is a group.
    pub fn group(&self, name: &str, env_key: Option<&str>) -> Option<anyhow::Result<Vec<Target>>> {
        let group = self.groups.get(name)?;
        Some(
            group
                .registries
                .iter()
                .map(|member| self.target(Some(member), env_key))
                .collect(),
        )
    }

    /// Every configured registry except the built-in one (unless it is the only one).
    pub fn all_targets(&self, env_key: Option<&str>) -> anyhow::Result<Vec<Target>> {
        let names: Vec<String> = self
            .registries
            .keys()
            .filter(|n| n.as_str() != BUILTIN_NAME)
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(vec![self.target(None, env_key)?]);
        }
        names
            .iter()
            .map(|n| self.target(Some(n), env_key))
            .collect()
    }

    pub fn add(
        &mut self,
        name: &str,
        url: &str,
        key: Option<String>,
        make_default: bool,
    ) -> anyhow::Result<()> {
        if name.is_empty() || name.chars().any(char::is_whitespace) || is_url(name) {
            bail!("registry names must be non-empty, without spaces, and not URLs");
        }
        if !is_url(url) {
            bail!("`{url}` is not an http:// or https:// URL");
        }
        self.registries.insert(
            name.to_owned(),
            RegistryEntry {
                url: normalize_url(url),
                key,
            },
        );
        if make_default {
            self.default = Some(name.to_owned());
        }
        Ok(())
    }

    /// Makes `name` (configured, or the built-in one) the default.
    pub fn set_default(&mut self, name: &str) -> anyhow::Result<()> {
        if name == BUILTIN_NAME {
            self.default = None;
            return Ok(());
        }
        if !self.registries.contains_key(name) {
            let known: Vec<String> = self.all().into_iter().map(|(n, _)| n).collect();
            bail!(
                "no registry named `{name}`; configured: {} (add one with `niso registry add NAME URL`)",
                known.join(", ")
            );
        }
        self.default = Some(name.to_owned());
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        if self.registries.remove(name).is_none() {
            if name == BUILTIN_NAME {
                bail!("{BUILTIN_NAME} is built in and cannot be removed");
            }
            bail!("no registry named `{name}`");
        }
        if self.default.as_deref() == Some(name) {
            self.default = None;
        }
        Ok(())
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

pub fn normalize_url(s: &str) -> String {
    s.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_default_until_another_is() {
        let mut c = ClientConfig::default();
        assert_eq!(c.target(None, None).unwrap().url, BUILTIN_URL);
        c.add(
            "private",
            "https://registry.example.com/",
            Some("k".into()),
            false,
        )
        .unwrap();
        assert_eq!(c.target(None, None).unwrap().name, "niso.dev");
        c.add(
            "private",
            "https://registry.example.com",
            Some("k".into()),
            true,
        )
        .unwrap();
        let t = c.target(None, None).unwrap();
        assert_eq!((t.name.as_str(), t.key.as_deref()), ("private", Some("k")));
        // A URL finds the key of the registry configured with that URL.
        let t = c
            .target(Some("https://registry.example.com/"), None)
            .unwrap();
        assert_eq!(t.key.as_deref(), Some("k"));
        // NISO_KEY wins, when it is a key at all.
        let env = niso_protocol::api_key::ApiKey::generate(&mut |b| b.fill(7));
        let t = c.target(Some("private"), Some(env.expose())).unwrap();
        assert_eq!(t.key.as_deref(), Some(env.expose()));
        let err = c.target(Some("private"), Some("env")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("NISO_KEY is not a niso API key"),
            "{err}"
        );
        assert!(c.target(Some("nope"), None).is_err());
        c.remove("private").unwrap();
        assert_eq!(c.default_name(), BUILTIN_NAME);
    }

    #[test]
    fn saving_keeps_the_users_comments_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let original = "# my registries\ndefault = \"work\"\n\n[registries.work]\n# the office one\nurl = \"https://work.example\"\n\n[registries.old]\nurl = \"https://old.example\"\n";
        std::fs::write(&path, original).unwrap();
        let mut c = ClientConfig::load(&path).unwrap();
        c.remove("old").unwrap();
        c.add("home", "https://home.example", None, false).unwrap();
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# my registries\ndefault = \"work\"\n"),
            "{text}"
        );
        assert!(
            text.contains("[registries.work]\n# the office one\nurl"),
            "{text}"
        );
        assert!(!text.contains("old.example"), "{text}");
        let again = ClientConfig::load(&path).unwrap();
        assert_eq!(again, c, "the file says what the model says:\n{text}");
        // A first save into no file at all.
        let fresh = dir.path().join("new.toml");
        c.save(&fresh).unwrap();
        assert_eq!(ClientConfig::load(&fresh).unwrap(), c);
    }

    #[test]
    fn groups_name_several_registries() {
        let c: ClientConfig = toml::from_str(
            "[registries.a]\nurl = \"http://a\"\n[registries.b]\nurl = \"http://b\"\n[groups.near]\nregistries = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let members = c.group("near", None).unwrap().unwrap();
        assert_eq!(
            members.iter().map(|t| t.url.as_str()).collect::<Vec<_>>(),
            ["http://a", "http://b"]
        );
        assert!(c.group("a", None).is_none());
        assert_eq!(c.all_targets(None).unwrap().len(), 2);
    }

    #[test]
    fn saved_with_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("niso/config.toml");
        let mut c = ClientConfig::default();
        c.add("a", "http://127.0.0.1:5000", Some("key".into()), true)
            .unwrap();
        c.save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ClientConfig::load(&path).unwrap(), c);
    }
}
