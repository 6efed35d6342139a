//! `hookgate telegram set-webhook`: the `setWebhook` call that points a bot at hookgate,
//! printed as a curl command for the user to run. It carries the bot token (in the URL)
//! and the source's secret as `secret_token`, which Telegram then sends back in
//! `X-Telegram-Bot-Api-Secret-Token` with every update: printing both on request is what
//! the command is for. Nothing here logs them.

use hookgate_sinks::chat::SinkConfig;
use serde_json::json;

use crate::config::Config;

/// The `setWebhook` request for one Telegram source and one Telegram sink's bot.
#[derive(Debug)]
pub struct SetWebhook {
    /// `https://api.telegram.org/bot<token>/setWebhook` (holds the bot token).
    pub endpoint: String,
    /// The JSON body: `url`, `secret_token`, and `allowed_updates` when the routes say.
    pub body: serde_json::Value,
    /// Things the user should know (not errors): printed on stderr.
    pub notes: Vec<String>,
}

impl SetWebhook {
    /// The request as a curl command line, quoted for a POSIX shell.
    pub fn curl(&self) -> String {
        format!(
            "curl -sS -X POST {} -H 'content-type: application/json' --data {}",
            shell_quote(&self.endpoint),
            shell_quote(&self.body.to_string())
        )
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether `s` is allowed as Telegram's `secret_token`: 1-256 of `A-Z a-z 0-9 _ -`.
pub fn is_secret_token(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds the `setWebhook` call for `public_url` (the address Telegram should post to:
/// a bare `https://host` gets `/hooks/<source>` appended). `source` and `sink` pick the
/// Telegram source and the Telegram sink whose bot token is used when the config has
/// several.
pub fn set_webhook(
    cfg: &Config,
    public_url: &str,
    source: Option<&str>,
    sink: Option<&str>,
) -> Result<SetWebhook, String> {
    let sources: Vec<_> = cfg
        .sources
        .iter()
        .filter(|s| s.provider == "telegram" && source.is_none_or(|n| s.name == n))
        .collect();
    let src = match (sources.as_slice(), source) {
        ([one], _) => *one,
        ([], Some(n)) => return Err(format!("no telegram source named '{n}' in the config")),
        ([], None) => return Err("the config has no source with provider = \"telegram\"".into()),
        (_, _) => {
            return Err("the config has several telegram sources: pick one with --source".into())
        }
    };
    let sinks: Vec<_> = cfg
        .sinks
        .iter()
        .filter_map(|s| match s {
            SinkConfig::Telegram(t) if sink.is_none_or(|n| t.name == n) => Some(t),
            _ => None,
        })
        .collect();
    let bot = match (sinks.as_slice(), sink) {
        ([one], _) => *one,
        ([], Some(n)) => return Err(format!("no telegram sink named '{n}' in the config")),
        ([], None) => {
            return Err(
                "the config has no telegram sink, so no bot token: add one or pick it with --sink"
                    .into(),
            )
        }
        (_, _) => {
            return Err("the config has several telegram sinks: pick the bot with --sink".into())
        }
    };
    let token = bot
        .bot_token()
        .map_err(|e| format!("sink '{}': {e}", bot.name))?;
    let secrets = src
        .resolve_secrets()
        .map_err(|e| format!("source '{}': {e}", src.name))?;
    // The first secret is the current one during a rotation (`new`, then `old`).
    let secret = secrets
        .first()
        .ok_or_else(|| format!("source '{}' has no secret", src.name))?;
    if !is_secret_token(secret.expose()) {
        return Err(format!(
            "source '{}': its secret cannot be Telegram's secret_token, which is 1-256 characters of A-Z a-z 0-9 _ - (value not shown)",
            src.name
        ));
    }
    let mut notes = Vec::new();
    let uri: http::Uri = public_url
        .parse()
        .map_err(|e| format!("--url is not a URL: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err("--url needs a scheme and a host, e.g. https://bot.example.com".into());
    };
    if !matches!(scheme, "https" | "http") {
        return Err("--url must be an https URL".into());
    }
    let hook_path = format!("/hooks/{}", src.name);
    let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => hook_path.clone(),
        Some(p) => {
            if !uri.path().ends_with(&hook_path) {
                notes.push(format!(
                    "the URL does not end with {hook_path}, where hookgate serves this source; fine only if a proxy rewrites it"
                ));
            }
            p.to_owned()
        }
    };
    if scheme != "https" {
        notes.push("Telegram only posts to https URLs (ports 443, 80, 88 or 8443)".into());
    }
    let url = format!("{scheme}://{authority}{path_and_query}");
    let mut body = json!({ "url": url, "secret_token": secret.expose() });
    // Ask only for the update kinds some route takes, when every route of this source
    // names its kinds; otherwise leave Telegram's default.
    let routes: Vec<_> = cfg.routes.iter().filter(|r| r.source == src.name).collect();
    if !routes.is_empty() && routes.iter().all(|r| r.events.is_some()) {
        let mut kinds: Vec<&str> = routes
            .iter()
            .flat_map(|r| r.events.iter().flatten().map(String::as_str))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        body["allowed_updates"] = json!(kinds);
    }
    Ok(SetWebhook {
        endpoint: format!(
            "{}/bot{}/setWebhook",
            bot.api_url.trim_end_matches('/'),
            token.expose()
        ),
        body,
        notes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml", &Default::default())
            .unwrap()
            .0
    }

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[[sources]]
name = "tg"
provider = "telegram"
secrets = ["new_secret-1", "old"]
[[sinks]]
name = "bot"
type = "telegram"
bot_token = "123:TOKEN"
chat_id = 5
[[routes]]
source = "tg"
events = ["message", "edited_message"]
sink = "bot"
"#;

    #[test]
    fn prints_the_call_with_the_current_secret_and_route_kinds() {
        let s = set_webhook(&config(BASE), "https://bot.example.com", None, None).unwrap();
        assert_eq!(
            s.endpoint,
            "https://api.telegram.org/bot123:TOKEN/setWebhook"
        );
        assert_eq!(
            s.body,
            json!({"url": "https://bot.example.com/hooks/tg", "secret_token": "new_secret-1",
                   "allowed_updates": ["edited_message", "message"]})
        );
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        assert_eq!(
            s.curl(),
            "curl -sS -X POST 'https://api.telegram.org/bot123:TOKEN/setWebhook' -H 'content-type: application/json' --data '{\"allowed_updates\":[\"edited_message\",\"message\"],\"secret_token\":\"new_secret-1\",\"url\":\"https://bot.example.com/hooks/tg\"}'"
        );
        let s = set_webhook(&config(BASE), "http://x/elsewhere", None, None).unwrap();
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
    }

    #[test]
    fn refuses_what_telegram_would_refuse_and_ambiguity() {
        // (A telegram source's secrets are checked the same way when the config loads.)
        assert!(is_secret_token("new_secret-1") && !is_secret_token("has spaces!"));
        let e = set_webhook(&config(BASE), "ftp://h", None, None).unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e = set_webhook(&config(BASE), "https://h", Some("nope"), None).unwrap_err();
        assert!(e.contains("no telegram source named 'nope'"), "{e}");
        let two = format!(
            "{BASE}\n[[sinks]]\nname = \"bot2\"\ntype = \"telegram\"\nbot_token = \"9:X\"\nchat_id = 1\n"
        );
        let e = set_webhook(&config(&two), "https://h", None, None).unwrap_err();
        assert!(e.contains("--sink"), "{e}");
        let s = set_webhook(&config(&two), "https://h", None, Some("bot2")).unwrap();
        assert!(s.endpoint.contains("/bot9:X/"));
        assert!(!is_secret_token("") && !is_secret_token(&"a".repeat(257)));
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
