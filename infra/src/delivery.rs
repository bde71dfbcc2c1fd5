//! Where an extension's verification code goes once its challenge is durable: an SMS
//! gateway's webhook, or a flash call the SIP edge places (`signaling::flash_call`). The
//! code travels only here, never in the log (which keeps its hash). Webhooks also carry the
//! edge's call-in notices to a user's app (`sip.call_in_webhook_url`).

use async_trait::async_trait;
use domain::E164;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the webhook at {url} answered {status}")]
    Refused { url: String, status: u16 },
    #[error("the webhook at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the flash call to {number} failed: {reason}")]
    FlashCall { number: String, reason: String },
}

/// Sends `code` to the phone holding `number`.
#[async_trait]
pub trait CodeSender: Send + Sync {
    async fn send(&self, number: &E164, code: &str) -> Result<(), DeliveryError>;
}

/// A URL that takes JSON `POST`s; any 2xx means taken.
pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            url: url.into(),
            client,
        }
    }

    pub async fn post(&self, body: &serde_json::Value) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Unreachable {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(DeliveryError::Refused {
                url: self.url.clone(),
                status: response.status().as_u16(),
            });
        }
        Ok(())
    }
}

/// An SMS gateway reached by webhook (config `api.sms_webhook_url`): each code is one
/// `POST` of `{"to": "+44…", "text": "…", "code": "…"}` as JSON.
pub struct SmsWebhook(Webhook);

impl SmsWebhook {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Webhook::new(url))
    }
}

#[async_trait]
impl CodeSender for SmsWebhook {
    async fn send(&self, number: &E164, code: &str) -> Result<(), DeliveryError> {
        let body = serde_json::json!({
            "to": number.as_str(),
            "text": format!("Your ringledger verification code is {code}"),
            "code": code,
        });
        self.0.post(&body).await
    }
}
