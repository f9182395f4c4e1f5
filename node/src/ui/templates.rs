//! The page templates, compiled into the binary and rendered by minijinja with HTML
//! auto-escaping (every template name ends in `.html`, which is what turns it on).

use std::sync::OnceLock;

use minijinja::{Environment, Value};

use super::units;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("packages.html", include_str!("templates/packages.html")),
    ("package.html", include_str!("templates/package.html")),
    ("node.html", include_str!("templates/node.html")),
    ("peers.html", include_str!("templates/peers.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("api.html", include_str!("templates/api.html")),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are compiled in and covered by the page tests; one that does not
            // parse shows up there, and at run time as a logged error on its page.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a built-in template does not parse");
            }
        }
        env.add_filter("bytes", units::bytes);
        env.add_filter("exact_bytes", units::exact_bytes);
        env.add_filter("ago", units::ago);
        env.add_filter("utc", units::utc);
        env.add_filter("short", units::short);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env
    })
}

/// Renders template `name` with `context`.
pub fn render(name: &str, context: Value) -> Result<String, minijinja::Error> {
    environment().get_template(name)?.render(context)
}
