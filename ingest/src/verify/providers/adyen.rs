//! Adyen (standard notification webhooks): no header; each notification item carries
//! `additionalData.hmacSignature`, the base64 HMAC-SHA256, under the hex-decoded HMAC key,
//! of `pspReference:originalReference:merchantAccountCode:merchantReference:value:
//! currency:eventCode:success` (empty fields stay empty) (Adyen docs, "Verify HMAC
//! signatures"). Every item of a batch must verify; at most 16 items. Adyen expects the
//! answer `[accepted]`, which hookgate sends for accepted events and their duplicates.
//!
//! Only those fields are signed, so the rest of the notification is not authenticated,
//! and there is no timestamp: replays are refused by the body-digest dedupe (the body's
//! digest is also the delivery id: Adyen retries the same body). Event type: the first
//! item's `eventCode`.

use base64::Engine as _;
use ring::hmac;
use serde_json::Value;

use crate::extract::FieldSpec;
use crate::verify::{
    ct_eq, decode_b64_exact, About, B64Buf, Defaults, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, SecretKind, Signed, Verifier, VerifyError, MAX_SIG_ENTRIES,
    MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Adyen);

struct Adyen;

/// A field as text: strings as they are, integers in decimal, booleans as words, absent
/// as empty.
fn field(item: &Value, pointer: &str) -> String {
    match item.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// The signed string of one `NotificationRequestItem`.
fn signing_string(item: &Value) -> String {
    [
        "/pspReference",
        "/originalReference",
        "/merchantAccountCode",
        "/merchantReference",
        "/amount/value",
        "/amount/currency",
        "/eventCode",
        "/success",
    ]
    .iter()
    .map(|p| field(item, p))
    .collect::<Vec<_>>()
    .join(":")
}

fn items(doc: &Value) -> Result<Vec<&Value>, VerifyError> {
    let list = doc
        .get("notificationItems")
        .and_then(Value::as_array)
        .ok_or(VerifyError::Missing)?;
    if list.is_empty() || list.len() > MAX_SIG_ENTRIES {
        return Err(VerifyError::Malformed);
    }
    list.iter()
        .map(|i| i.get("NotificationRequestItem").ok_or(VerifyError::Malformed))
        .collect()
}

impl ProviderSpec for Adyen {
    fn name(&self) -> &'static str {
        "adyen"
    }

    fn about(&self) -> About {
        About {
            headers: &["(body) `additionalData.hmacSignature`"],
            signed: "per item: base64 HMAC-SHA256(pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success)",
            secret: "the webhook's HMAC key (hex)",
            handshakes: &[],
            docs: "https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures/",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn signature_in_body(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::HexKey
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        secrets
            .iter()
            .enumerate()
            .map(|(index, s)| {
                hex::decode(s)
                    .map(|key| hmac::Key::new(hmac::HMAC_SHA256, &key))
                    .map_err(|_| KeyError::BadSecret {
                        index,
                        reason: "expected the HMAC key as hex digits (as Adyen shows it)",
                    })
            })
            .collect::<Result<_, _>>()
            .map(Keys::Hmac)
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let doc: Value = serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed)?;
        for item in items(&doc)? {
            let sig_text = item
                .pointer("/additionalData/hmacSignature")
                .ok_or(VerifyError::Missing)?
                .as_str()
                .ok_or(VerifyError::Malformed)?;
            let mut buf: B64Buf = [0u8; MAX_SIG_LEN + 8];
            let sig = decode_b64_exact(sig_text, 32, &mut buf)?;
            let text = signing_string(item);
            let matched = v
                .hmac_keys()
                .iter()
                .any(|key| ct_eq(hmac::sign(key, text.as_bytes()).as_ref(), sig));
            if !matched {
                return Err(VerifyError::Invalid);
            }
        }
        Ok(())
    }

    super::common::signed_in_body!();

    /// One notification item for the payload: its SHA-256 as `pspReference`, the payload
    /// itself (as text) in `additionalData`, signed.
    fn sign_request(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Signed, KeyError> {
        let key = hex::decode(secret).map_err(|_| KeyError::BadSecret {
            index: 0,
            reason: "expected the HMAC key as hex digits (as Adyen shows it)",
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let mut item = serde_json::json!({
            "amount": {"currency": "EUR", "value": 1130},
            "eventCode": "AUTHORISATION",
            "eventDate": now.to_string(),
            "merchantAccountCode": "HookgateMerchant",
            "merchantReference": "hookgate",
            "originalReference": "",
            "pspReference": hex::encode(digest.as_ref().get(..8).unwrap_or_default()),
            "success": "true",
            "additionalData": {"hookgate.payload": String::from_utf8_lossy(body)},
        });
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key),
            signing_string(&item).as_bytes(),
        );
        if let Some(extra) = item.pointer_mut("/additionalData") {
            extra["hmacSignature"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
        }
        let doc = serde_json::json!({
            "live": "false",
            "notificationItems": [{"NotificationRequestItem": item}],
        });
        Ok(Signed {
            headers: Vec::new(),
            body: doc.to_string().into_bytes(),
        })
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer(
                "/notificationItems/0/NotificationRequestItem/eventCode",
            )),
        )
    }

    fn accepted_body(&self) -> Option<&'static str> {
        Some("[accepted]")
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        [
            "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
            "0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9",
        ]
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    const KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

    fn notification(signature: &str, value: i64, extra_item: bool) -> Vec<u8> {
        let item = |sig: &str| {
            serde_json::json!({"NotificationRequestItem": {
                "additionalData": {"hmacSignature": sig},
                "amount": {"currency": "EUR", "value": value},
                "eventCode": "AUTHORISATION",
                "merchantAccountCode": "TestMerchant",
                "merchantReference": "TestPayment-1407325143704",
                "pspReference": "7914073381342284",
                "success": "true"
            }})
        };
        let mut items = vec![item(signature)];
        if extra_item {
            items.push(item("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        }
        serde_json::json!({"live": "false", "notificationItems": items})
            .to_string()
            .into_bytes()
    }

    /// Adyen's worked example ("Verify HMAC signatures": HMAC key 44782DEF…A056, the
    /// AUTHORISATION of 1130 EUR for TestMerchant / TestPayment-1407325143704, no
    /// originalReference) and its signature.
    #[test]
    fn adyen_documented_example() {
        let v = verifier(super::PROVIDER, &[KEY]);
        let sig = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0=";
        assert_eq!(v.verify(&Default::default(), &notification(sig, 1130, false), NOW), Ok(()));
        // A signed field changed: refused.
        assert_eq!(
            v.verify(&Default::default(), &notification(sig, 1131, false), NOW),
            Err(VerifyError::Invalid)
        );
        // Every item of a batch must verify.
        assert_eq!(
            v.verify(&Default::default(), &notification(sig, 1130, true), NOW),
            Err(VerifyError::Invalid)
        );
        for (body, expected) in [
            (&b"not json"[..], VerifyError::Malformed),
            (br#"{"live":"false"}"#, VerifyError::Missing),
            (br#"{"notificationItems":[]}"#, VerifyError::Malformed),
            (br#"{"notificationItems":[{"NotificationRequestItem":{}}]}"#, VerifyError::Missing),
            (
                br#"{"notificationItems":[{"NotificationRequestItem":{"additionalData":{"hmacSignature":"!!"}}}]}"#,
                VerifyError::Malformed,
            ),
        ] {
            assert_eq!(
                v.verify(&Default::default(), body, NOW),
                Err(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// adyen-node-api-library's own vectors (Adyen/adyen-node-api-library,
    /// `src/__tests__/hmacValidator.spec.ts` at 3b84a18: key `DFB1EB54…AB00`, the
    /// REPORT_AVAILABLE item signed `ZNBPtI+o…DRE=` and the item with event code `EVENT`
    /// signed `ipnxGCaU…ntIc=`), verbatim, as the notifications Adyen would post.
    #[test]
    fn adyen_node_sdk_vectors() {
        const SDK_KEY: &str = "DFB1EB5485895CFA84146406857104ABB4CBCABDC8AAF103A624C8F6A3EAAB00";
        let v = verifier(super::PROVIDER, &[SDK_KEY]);
        let body = |event: &str, sig: &str| {
            serde_json::json!({"live": "false", "notificationItems": [{"NotificationRequestItem": {
                "pspReference": "pspReference",
                "originalReference": "originalReference",
                "merchantAccountCode": "merchantAccount",
                "merchantReference": "reference",
                "amount": {"currency": "EUR", "value": 1000},
                "eventCode": event,
                "eventDate": "2019-09-21T11:45:24.637Z",
                "paymentMethod": "VISA",
                "reason": "reason",
                "success": "true",
                "additionalData": {"hmacSignature": sig}
            }}]})
            .to_string()
            .into_bytes()
        };
        let h = http::HeaderMap::new();
        let report = "ZNBPtI+oDyyRrLyD1XirkKnQgIAlFc07Vj27TeHsDRE=";
        assert_eq!(v.verify(&h, &body("REPORT_AVAILABLE", report), NOW), Ok(()));
        let event = "ipnxGCaUZ4l8TUW75a71/ghd2Fe5ffvX0pV4TLTntIc=";
        assert_eq!(v.verify(&h, &body("EVENT", event), NOW), Ok(()));
        assert_eq!(
            v.verify(&h, &body("EVENT", report), NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn the_signing_string_keeps_empty_fields() {
        let item: serde_json::Value = serde_json::from_slice(&notification("x", 1130, false)).unwrap();
        let item = &item["notificationItems"][0]["NotificationRequestItem"];
        assert_eq!(
            super::signing_string(item),
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
        );
    }
}
