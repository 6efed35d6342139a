//! Recognising chat messages (Telegram updates, Slack events, Discord messages) in event bodies.

use serde_json::Value;

/// A chat platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Telegram (Bot API updates).
    Telegram,
    /// Slack (Events API).
    Slack,
    /// Discord (message objects).
    Discord,
}

/// A user's chat message found in an event body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Where it came from.
    pub platform: Platform,
    /// The chat / channel id, as text.
    pub chat: String,
    /// The sender's user id, as text, when the platform gives one.
    pub user: Option<String>,
    /// What the user wrote.
    pub text: String,
}

/// The user message in `body`, or `None` when the body is not one (other updates,
/// messages without text, and messages from bots, which would make bots talk to each other).
pub fn chat_message(body: &Value) -> Option<ChatMessage> {
    telegram(body)
        .or_else(|| slack(body))
        .or_else(|| discord(body))
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn telegram(body: &Value) -> Option<ChatMessage> {
    body.get("update_id")?;
    let m = body.get("message")?;
    if m.pointer("/from/is_bot").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    Some(ChatMessage {
        platform: Platform::Telegram,
        chat: id_text(m.pointer("/chat/id")?)?,
        user: m.pointer("/from/id").and_then(id_text),
        text: m.get("text")?.as_str()?.to_owned(),
    })
}

fn slack(body: &Value) -> Option<ChatMessage> {
    if body.get("type")?.as_str()? != "event_callback" {
        return None;
    }
    let e = body.get("event")?;
    if e.get("type")?.as_str()? != "message"
        || e.get("bot_id").is_some()
        || e.get("subtype").is_some()
    {
        return None;
    }
    Some(ChatMessage {
        platform: Platform::Slack,
        chat: id_text(e.get("channel")?)?,
        user: e.get("user").and_then(id_text),
        text: e.get("text")?.as_str()?.to_owned(),
    })
}

fn discord(body: &Value) -> Option<ChatMessage> {
    // A MESSAGE_CREATE gateway payload wraps the message in `d`.
    let m = body
        .get("d")
        .filter(|d| d.get("channel_id").is_some())
        .unwrap_or(body);
    if m.pointer("/author/bot").and_then(Value::as_bool) == Some(true)
        || m.get("webhook_id").is_some()
    {
        return None;
    }
    let text = m.get("content")?.as_str()?;
    if text.is_empty() {
        return None;
    }
    Some(ChatMessage {
        platform: Platform::Discord,
        chat: id_text(m.get("channel_id")?)?,
        user: m.pointer("/author/id").and_then(id_text),
        text: text.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognises_and_skips() {
        let tg = json!({"update_id":1,"message":{"message_id":5,"from":{"id":9,"is_bot":false},"chat":{"id":-100,"type":"group"},"text":"hi"}});
        let m = chat_message(&tg).unwrap();
        assert_eq!(
            (m.platform, m.chat.as_str(), m.text.as_str()),
            (Platform::Telegram, "-100", "hi")
        );
        let bot =
            json!({"update_id":1,"message":{"from":{"is_bot":true},"chat":{"id":1},"text":"hi"}});
        assert!(chat_message(&bot).is_none());
        let sticker = json!({"update_id":1,"message":{"chat":{"id":1},"sticker":{}}});
        assert!(chat_message(&sticker).is_none());
        let sl = json!({"type":"event_callback","event":{"type":"message","channel":"C1","text":"yo","user":"U1"}});
        assert_eq!(chat_message(&sl).unwrap().chat, "C1");
        assert_eq!(chat_message(&sl).unwrap().user.as_deref(), Some("U1"));
        assert_eq!(m.user.as_deref(), Some("9"));
        let slbot = json!({"type":"event_callback","event":{"type":"message","channel":"C1","text":"yo","bot_id":"B"}});
        assert!(chat_message(&slbot).is_none());
        let dc = json!({"id":"1","channel_id":"42","content":"hey","author":{"id":"7"}});
        assert_eq!(chat_message(&dc).unwrap().platform, Platform::Discord);
        assert_eq!(chat_message(&dc).unwrap().user.as_deref(), Some("7"));
        assert!(chat_message(&json!({"ref":"refs/heads/main"})).is_none());
    }
}
