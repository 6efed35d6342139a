//! `llm` sink: answers chat messages with an OpenAI-compatible chat completion. It returns
//! the answer; the dispatcher retries the completion and sends the answer through the
//! `reply_via` chat sink into the same chat.
//!
//! How the API's answers are taken (tested against a fake that answers like OpenAI's):
//! - 429 `rate_limit_exceeded` (or any 429 without a quota code): retried no sooner than
//!   `Retry-After` / `retry-after-ms`. 429 `insufficient_quota`: permanent, since no
//!   retry helps until the account has credit.
//! - `finish_reason: "length"` with text: the text is sent with [`TRUNCATED_NOTE`] after
//!   it, so the chat sees that the answer was cut off; the history keeps the text alone.
//! - `content: null`: a `refusal` text is the answer; `finish_reason` `content_filter`,
//!   `tool_calls` or `length` (the limit spent before any text) is permanent; otherwise
//!   (a local model that answered nothing) retried.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hookgate_proto::Event;
use serde::Serialize;
use serde_json::json;

use crate::chat::chat_in::{chat_message, ChatMessage, Platform};
use crate::chat::config::{LlmConfig, RetryPolicy};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::net;
use crate::secret::Secret;

/// Appended to an answer the model cut off at its output limit (`finish_reason: "length"`).
pub const TRUNCATED_NOTE: &str = "\n\n[answer cut off: the model reached its output limit]";

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The answer text, trimmed.
    pub text: String,
    /// The model stopped at its output limit (`finish_reason: "length"`).
    pub truncated: bool,
}

impl Completion {
    /// The text to send to the chat: the answer, plus [`TRUNCATED_NOTE`] when cut off.
    pub fn for_chat(&self) -> String {
        if self.truncated {
            format!("{}{TRUNCATED_NOTE}", self.text)
        } else {
            self.text.clone()
        }
    }
}

/// Event ids remembered as answered, so a redelivered update gets one reply.
const ANSWERED_CAP: usize = 10_000;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// What the llm sink makes of one event.
#[derive(Debug)]
pub enum Incoming {
    /// A chat message to answer.
    Question(Question),
    /// Nothing to answer, with why.
    Skipped(String),
}

/// A chat message to answer, claimed: until [`LlmSink::answered`] or [`LlmSink::release`],
/// a redelivery of the same event is skipped as already answered.
#[derive(Debug)]
pub struct Question {
    /// The chat the answer goes to.
    pub chat: String,
    /// The conversation to complete: system prompt, remembered turns, the new message.
    pub turns: Vec<Turn>,
    /// The chat's history key.
    key: String,
    /// The new message's text, remembered with the answer.
    text: String,
}

/// The llm responder. Keeps bounded per-chat history (LRU over chats) and a bounded set
/// of answered event ids.
pub struct LlmSink {
    name: String,
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
    system_prompt: Option<String>,
    history: usize,
    max_chats: usize,
    reply_via: String,
    /// `allow_chats`; `None` = the reply sink's configured chat.
    allow_chats: Option<HashSet<String>>,
    allow_users: HashSet<String>,
    ignored: metrics::Counter,
    client: reqwest::Client,
    retry: RetryPolicy,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tick: u64,
    chats: HashMap<String, (u64, VecDeque<Turn>)>,
    answered: HashSet<String>,
    answered_order: VecDeque<String>,
}

impl LlmSink {
    /// Builds the responder from its config (the reply sink is resolved by the dispatcher).
    pub fn new(c: &LlmConfig) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::Sink {
            sink: c.name.clone(),
            message,
        };
        let base = url::Url::parse(&c.api_url).map_err(|e| err(format!("api_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(err("api_url must be http or https".into()));
        }
        let retry = c.retry(Duration::from_secs(30));
        Ok(LlmSink {
            name: c.name.clone(),
            endpoint: format!("{}/chat/completions", c.api_url.trim_end_matches('/')),
            model: c.model.clone(),
            api_key: c.api_key().map_err(err)?,
            system_prompt: c.system_prompt.clone(),
            history: c.history,
            max_chats: c.max_chats.max(1),
            reply_via: c.reply_via.clone(),
            allow_chats: c
                .allow_chats
                .as_ref()
                .map(|v| v.iter().map(ToString::to_string).collect()),
            allow_users: c.allow_users.iter().map(ToString::to_string).collect(),
            ignored: metrics::counter!("hookgate_llm_ignored_total", "reason" => "not_allowed"),
            client: net::client(retry.timeout).map_err(err)?,
            retry,
            state: Mutex::new(State::default()),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the chat sink answers go through.
    pub fn reply_via(&self) -> &str {
        &self.reply_via
    }

    /// Retry limits for the completion call.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dedupe_keys(ev: &Event) -> Vec<String> {
        let mut keys = vec![format!("id:{}", ev.id)];
        if !ev.delivery_id.is_empty() {
            keys.push(format!("delivery:{}:{}", ev.source, ev.delivery_id));
        }
        keys
    }

    /// Marks `ev` as being answered; false if it already was (or is in flight).
    fn claim(&self, ev: &Event) -> bool {
        let keys = Self::dedupe_keys(ev);
        let mut st = self.state();
        if keys.iter().any(|k| st.answered.contains(k)) {
            return false;
        }
        for k in keys {
            st.answered.insert(k.clone());
            st.answered_order.push_back(k);
        }
        while st.answered_order.len() > ANSWERED_CAP {
            if let Some(old) = st.answered_order.pop_front() {
                st.answered.remove(&old);
            }
        }
        true
    }

    /// Forgets a claim after a failure so a replay can answer.
    pub fn release(&self, ev: &Event) {
        let mut st = self.state();
        for k in Self::dedupe_keys(ev) {
            st.answered.remove(&k);
        }
    }

    fn chat_key(m: &ChatMessage) -> String {
        format!("{:?}:{}", m.platform, m.chat)
    }

    /// The remembered turns of a chat, oldest first.
    pub fn history_of(&self, key: &str) -> Vec<Turn> {
        let mut st = self.state();
        st.tick += 1;
        let tick = st.tick;
        match st.chats.get_mut(key) {
            Some((t, turns)) => {
                *t = tick;
                turns.iter().cloned().collect()
            }
            None => Vec::new(),
        }
    }

    fn remember(&self, key: &str, user: String, answer: String) {
        if self.history == 0 {
            return;
        }
        let mut st = self.state();
        st.tick += 1;
        let tick = st.tick;
        if !st.chats.contains_key(key) && st.chats.len() >= self.max_chats {
            // Evict the least recently used chat; O(chats) is fine at these sizes.
            if let Some(old) = st
                .chats
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                st.chats.remove(&old);
            }
        }
        let entry = st.chats.entry(key.to_owned()).or_default();
        entry.0 = tick;
        entry.1.push_back(Turn {
            role: "user",
            content: user,
        });
        entry.1.push_back(Turn {
            role: "assistant",
            content: answer,
        });
        while entry.1.len() > self.history {
            entry.1.pop_front();
        }
    }

    /// One chat-completion call: the answer.
    pub async fn complete(&self, messages: &[Turn]) -> Result<Completion, SinkError> {
        let body = json!({ "model": self.model, "messages": messages });
        let mut req = self.client.post(&self.endpoint).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        let redact = |e: SinkError| match &self.api_key {
            Some(k) => e.redacted(k),
            None => e,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| redact(SinkError::from_reqwest("llm", e)))?;
        let status = resp.status();
        let retry_after = net::header_secs(resp.headers(), "retry-after")
            .or_else(|| net::header_secs(resp.headers(), "retry-after-ms").map(|d| d / 1000));
        let text = net::body_text(resp, 1024 * 1024).await;
        if !status.is_success() {
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let err = &parsed["error"];
            let detail = err["message"].as_str().unwrap_or(&text);
            let code = err["code"].as_str().or_else(|| err["type"].as_str());
            let mut msg = format!("llm: {}: {}", status.as_u16(), net::short(detail));
            if let Some(c) = code {
                msg.push_str(&format!(" ({})", net::short(c)));
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                && code == Some("insufficient_quota")
            {
                // Not a rate limit: the account is out of credit until someone pays.
                msg.push_str(
                    ": the API account is out of quota; no retry helps until it has credit",
                );
                return Err(redact(SinkError::Permanent(msg)));
            }
            return Err(redact(SinkError::from_status(status, retry_after, msg)));
        }
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| SinkError::retryable("llm: response is not JSON"))?;
        completion(&parsed)
    }

    /// Whether `msg` comes from an allowed chat or user: `allow_chats` (`"*"` = any), else
    /// the reply sink's configured chat (`reply_chat`); or `allow_users`.
    fn allowed(&self, msg: &ChatMessage, reply_chat: Option<&str>) -> bool {
        let chat_ok = match &self.allow_chats {
            Some(chats) => chats.contains("*") || chats.contains(&msg.chat),
            None => reply_chat == Some(msg.chat.as_str()),
        };
        chat_ok
            || msg
                .user
                .as_ref()
                .is_some_and(|u| self.allow_users.contains(u))
    }

    /// The chat message in `body` as a claimed [`Question`], or why there is nothing to
    /// answer: not a chat message, not from the `reply_via` sink's platform
    /// (`reply_platform`), not from an allowed chat or user (the reply sink's configured
    /// chat is `reply_chat`), or already answered.
    pub fn question(
        &self,
        ev: &Event,
        body: Option<&serde_json::Value>,
        reply_platform: Option<Platform>,
        reply_chat: Option<&str>,
    ) -> Incoming {
        let Some(msg) = body.and_then(chat_message) else {
            return Incoming::Skipped("not a chat message".into());
        };
        if reply_platform != Some(msg.platform) {
            return Incoming::Skipped(format!(
                "message from {:?} but reply_via sink is not {:?}",
                msg.platform, msg.platform
            ));
        }
        if !self.allowed(&msg, reply_chat) {
            // A stranger costs nothing: no model call, no reply, no history. The text is
            // not logged (it is someone else's message).
            self.ignored.increment(1);
            tracing::debug!(sink = %self.name, platform = ?msg.platform, chat = %msg.chat, user = ?msg.user, "llm: message from a chat/user not on the allow-list ignored");
            return Incoming::Skipped("chat or user not on the allow-list".into());
        }
        if !self.claim(ev) {
            return Incoming::Skipped("already answered".into());
        }
        let key = Self::chat_key(&msg);
        let mut turns = Vec::new();
        if let Some(sp) = &self.system_prompt {
            turns.push(Turn {
                role: "system",
                content: sp.clone(),
            });
        }
        turns.extend(self.history_of(&key));
        turns.push(Turn {
            role: "user",
            content: msg.text.clone(),
        });
        Incoming::Question(Question {
            chat: msg.chat,
            turns,
            key,
            text: msg.text,
        })
    }

    /// Records that `answer` to `question` reached the chat: it joins the chat's history.
    pub fn answered(&self, question: Question, answer: String) {
        self.remember(&question.key, question.text, answer);
    }
}

/// The answer in a successful chat-completion response, or why there is none.
pub fn completion(resp: &serde_json::Value) -> Result<Completion, SinkError> {
    let choice = &resp["choices"][0];
    let finish = choice["finish_reason"].as_str().unwrap_or("");
    let message = &choice["message"];
    let text = message["content"].as_str().map(str::trim).unwrap_or("");
    if !text.is_empty() {
        return Ok(Completion {
            text: text.to_owned(),
            truncated: finish == "length",
        });
    }
    if let Some(refusal) = message["refusal"].as_str().map(str::trim) {
        if !refusal.is_empty() {
            return Ok(Completion {
                text: refusal.to_owned(),
                truncated: false,
            });
        }
    }
    match finish {
        "content_filter" => Err(SinkError::permanent(
            "llm: no answer: the provider's content filter withheld it (finish_reason content_filter)",
        )),
        "tool_calls" | "function_call" => Err(SinkError::permanent(
            "llm: no answer: the model asked for a tool call, and hookgate offers no tools",
        )),
        "length" => Err(SinkError::permanent(
            "llm: no answer: the model reached its output limit before writing any text (finish_reason length)",
        )),
        // Local models occasionally return nothing; another try usually helps.
        other => Err(SinkError::retryable(format!(
            "llm: response has no answer (finish_reason {})",
            if other.is_empty() { "absent" } else { other }
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    fn resp(content: serde_json::Value, finish: &str) -> serde_json::Value {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
    }

    #[test]
    fn answers_truncations_refusals_and_empty_responses() {
        let ok = completion(&resp(json!(" hi "), "stop")).unwrap();
        assert_eq!((ok.text.as_str(), ok.truncated), ("hi", false));
        assert_eq!(ok.for_chat(), "hi");
        let cut = completion(&resp(json!("The answer is"), "length")).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.for_chat(), format!("The answer is{TRUNCATED_NOTE}"));
        let mut refused = resp(serde_json::Value::Null, "stop");
        refused["choices"][0]["message"]["refusal"] = json!("I can't help with that.");
        assert_eq!(
            completion(&refused).unwrap().text,
            "I can't help with that."
        );
        for f in ["content_filter", "tool_calls", "length"] {
            let e = completion(&resp(serde_json::Value::Null, f)).unwrap_err();
            assert!(e.is_permanent(), "{f}: {e}");
        }
        let e = completion(&resp(serde_json::Value::Null, "stop")).unwrap_err();
        assert!(!e.is_permanent(), "{e}");
        assert!(!completion(&json!({})).unwrap_err().is_permanent());
    }
}
