//! Target markups: escaping interpolated values and splitting long texts at safe points.

/// The text format a sink's API interprets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Markup {
    /// No markup; nothing is escaped.
    Plain,
    /// Telegram `parse_mode = "HTML"`.
    TelegramHtml,
    /// Telegram `parse_mode = "MarkdownV2"`.
    TelegramMarkdownV2,
    /// Discord markdown.
    Discord,
    /// Slack mrkdwn.
    Slack,
}

const MDV2_SPECIAL: &[char] = &[
    '_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!', '\\',
];
// Discord strips a backslash before any ASCII punctuation, so escaping these is always safe.
const DISCORD_SPECIAL: &[char] = &[
    '\\', '*', '_', '~', '`', '|', '>', '<', '#', '-', '[', ']', '(', ')',
];

impl Markup {
    /// All markups, for compiling a template once per markup.
    pub const ALL: [Markup; 5] = [
        Markup::Plain,
        Markup::TelegramHtml,
        Markup::TelegramMarkdownV2,
        Markup::Discord,
        Markup::Slack,
    ];

    /// A stable name, used as the template auto-escape tag.
    pub fn name(self) -> &'static str {
        match self {
            Markup::Plain => "plain",
            Markup::TelegramHtml => "telegram-html",
            Markup::TelegramMarkdownV2 => "telegram-markdownv2",
            Markup::Discord => "discord",
            Markup::Slack => "slack",
        }
    }

    /// The markup with this [`Markup::name`].
    pub fn from_name(name: &str) -> Option<Markup> {
        Markup::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Escapes `s` so the target shows it literally.
    pub fn escape(self, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + s.len() / 8);
        for c in s.chars() {
            match self {
                Markup::Plain => out.push(c),
                Markup::TelegramHtml | Markup::Slack => match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    c => out.push(c),
                },
                Markup::TelegramMarkdownV2 | Markup::Discord => {
                    let special = if self == Markup::Discord {
                        DISCORD_SPECIAL
                    } else {
                        MDV2_SPECIAL
                    };
                    if special.contains(&c) {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
        out
    }
}

/// Splits `text` into parts of at most `max` UTF-16 code units (how Telegram and Discord
/// count). Cuts prefer a newline, then a space, and never fall inside a character, after
/// an escaping backslash, or (HTML) inside a tag or entity; HTML tags open at a cut are
/// closed and reopened so each part parses on its own.
pub fn split(text: &str, max: usize, markup: Markup) -> Vec<String> {
    let max = max.max(16);
    let mut parts = Vec::new();
    let mut rest = text.to_owned();
    loop {
        if utf16_len(&rest) <= max {
            if !rest.trim().is_empty() || parts.is_empty() {
                parts.push(rest);
            }
            return parts;
        }
        // Leave room for closing tags appended at the cut.
        let budget = if markup == Markup::TelegramHtml {
            max.saturating_sub(max / 8).max(8)
        } else {
            max
        };
        let cut = find_cut(&rest, budget, markup);
        let (head, tail) = rest.split_at(cut.at);
        let mut head = head.trim_end_matches([' ', '\n']).to_owned();
        let mut tail = tail.strip_prefix(['\n', ' ']).unwrap_or(tail).to_owned();
        if markup == Markup::TelegramHtml {
            let open = open_tags(&head);
            for (name, _) in open.iter().rev() {
                head.push_str("</");
                head.push_str(name);
                head.push('>');
            }
            let reopen: String = open.iter().map(|(_, full)| full.as_str()).collect();
            tail = reopen + &tail;
        }
        if !head.trim().is_empty() {
            parts.push(head);
        }
        if tail.len() >= rest.len() {
            // No progress is possible (pathological tag nesting); fall back to a hard cut.
            let hard = find_cut(&rest, budget, Markup::Plain).at;
            let (h, t) = rest.split_at(hard);
            parts.push(h.to_owned());
            rest = t.to_owned();
            continue;
        }
        rest = tail;
    }
}

/// Number of UTF-16 code units in `s`.
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

struct Cut {
    at: usize,
}

fn find_cut(s: &str, max: usize, markup: Markup) -> Cut {
    let html = markup == Markup::TelegramHtml;
    let backslash = matches!(markup, Markup::TelegramMarkdownV2 | Markup::Discord);
    let (mut nl, mut sp, mut safe) = (None, None, None);
    let (mut in_tag, mut entity_len, mut escaped) = (false, None::<usize>, false);
    let mut units = 0usize;
    let mut hard = 0usize;
    for (i, c) in s.char_indices() {
        let cu = c.len_utf16();
        if units + cu > max {
            break;
        }
        if i > 0 && !in_tag && entity_len.is_none() && !escaped {
            match c {
                '\n' => nl = Some(i),
                ' ' => sp = Some(i),
                _ => {}
            }
            safe = Some(i);
        }
        units += cu;
        hard = i + c.len_utf8();
        escaped = backslash && c == '\\' && !escaped;
        if html {
            match c {
                '<' if entity_len.is_none() => in_tag = true,
                '>' if in_tag => in_tag = false,
                '&' if !in_tag => entity_len = Some(0),
                ';' if entity_len.is_some() => entity_len = None,
                c if entity_len.is_some() => {
                    // Not an entity after all (Telegram requires escaping a bare `&`, but
                    // do not trap the cut forever if it is missing).
                    let n = entity_len.unwrap_or(0) + 1;
                    entity_len = if c.is_whitespace() || n > 10 {
                        None
                    } else {
                        Some(n)
                    };
                }
                _ => {}
            }
        }
    }
    // A newline or space in the first quarter would make tiny parts; prefer the later cut.
    let min = max / 4;
    let pick = nl
        .filter(|&p| p > min)
        .or(sp.filter(|&p| p > min))
        .or(safe)
        .unwrap_or(hard);
    Cut {
        at: if pick == 0 { hard } else { pick },
    }
}

/// The HTML tags left open at the end of `s`: (name, full opening tag).
fn open_tags(s: &str) -> Vec<(String, String)> {
    let mut stack: Vec<(String, String)> = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..start + len + 1];
        let inner = &tag[1..tag.len() - 1];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            if let Some(pos) = stack.iter().rposition(|(n, _)| *n == name) {
                stack.truncate(pos);
            }
        } else {
            let name: String = inner
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
                .to_ascii_lowercase();
            if !name.is_empty() && !inner.ends_with('/') {
                stack.push((name, tag.to_owned()));
            }
        }
        rest = &rest[start + len + 1..];
    }
    stack
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn escapes_per_target() {
        assert_eq!(Markup::TelegramHtml.escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(Markup::Slack.escape("<@U1> & co"), "&lt;@U1&gt; &amp; co");
        assert_eq!(
            Markup::TelegramMarkdownV2.escape("v1.2 (beta) [x]_*!"),
            "v1\\.2 \\(beta\\) \\[x\\]\\_\\*\\!"
        );
        assert_eq!(Markup::TelegramMarkdownV2.escape("a\\b"), "a\\\\b");
        assert_eq!(
            Markup::Discord.escape("**hi** `x`"),
            "\\*\\*hi\\*\\* \\`x\\`"
        );
        assert_eq!(Markup::Plain.escape("<*>"), "<*>");
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 100, Markup::Plain), vec!["hello"]);
    }

    #[test]
    fn splits_at_newlines_within_limit() {
        let line = "x".repeat(30);
        let text = vec![line.clone(); 10].join("\n");
        let parts = split(&text, 100, Markup::Plain);
        assert!(parts.len() >= 4);
        for p in &parts {
            assert!(utf16_len(p) <= 100, "{p}");
            assert!(!p.starts_with('\n') && !p.ends_with('\n'));
        }
        assert_eq!(parts.join("\n"), text);
    }

    #[test]
    fn never_splits_a_surrogate_pair() {
        let text = "😀".repeat(100); // 2 UTF-16 units each
        let parts = split(&text, 33, Markup::Plain);
        for p in &parts {
            assert!(utf16_len(p) <= 33);
        }
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn html_cut_avoids_entities_and_rebalances_tags() {
        let text = format!("<b>{}</b>", "a &amp; b ".repeat(40));
        let parts = split(&text, 64, Markup::TelegramHtml);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(utf16_len(p) <= 64, "{p}");
            assert!(p.starts_with("<b>") && p.ends_with("</b>"), "{p}");
            // No broken entity: every & starts a full &amp;
            for (i, _) in p.match_indices('&') {
                assert!(p[i..].starts_with("&amp;"), "{p}");
            }
        }
    }

    #[test]
    fn markdown_cut_not_after_backslash() {
        let text = "\\.".repeat(50);
        for p in split(&text, 31, Markup::TelegramMarkdownV2) {
            assert!(!p.ends_with('\\') || p.ends_with("\\\\"), "{p}");
            assert!(utf16_len(&p) <= 31);
        }
    }
}
