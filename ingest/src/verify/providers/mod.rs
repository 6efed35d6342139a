//! The registry: every provider hookgate knows, one file each.
//!
//! Adding a provider is one new file here (a unit struct implementing
//! [`ProviderSpec`](super::ProviderSpec) and a `pub const PROVIDER`) and one line in the
//! list below. Order is the order of `hookgate providers` and the README table.

macro_rules! registry {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*
        /// Every provider, in display order.
        pub(super) const REGISTRY: &[super::Provider] = &[$($name::PROVIDER),*];
    };
}

mod common;

registry! {
    github,
    gitlab,
    stripe,
    shopify,
    slack,
    standard_webhooks,
    telegram,
    discord,
    generic_hmac,
    clerk,
    resend,
    openai,
    bitbucket,
    linear,
    typeform,
    calendly,
    mux,
    woocommerce,
    intercom,
    sentry,
    vercel,
    lemon_squeezy,
    coinbase,
    razorpay,
    jira,
    atlassian_connect,
    meta,
    zoom,
    twitch,
    box_com,
    dropbox,
    pagerduty,
    paddle,
    square,
    twilio,
    mollie,
    zendesk,
    postmark,
    hubspot,
    trello,
    okta,
    netlify,
    sendgrid,
    adyen,
    mailgun,
    microsoft_graph,
    asana,
    notion,
}
