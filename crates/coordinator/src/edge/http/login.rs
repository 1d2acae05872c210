//! The dashboard's sign-in: a page with one field, the token. `POST /login` asks the gate
//! whether the token is known and, if so, sets it as an HttpOnly, SameSite=Strict cookie
//! (`Secure` over TLS) that the gate reads on every later request; `POST /logout` clears
//! it. Without authentication there is nothing to sign in to, and `/login` sends the
//! browser to the dashboard.

use crate::edge::auth::{self, TOKEN_COOKIE};
use crate::edge::gate::Gate;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

const LOGIN_HTML: &str = include_str!("dashboard/login.html");

/// The login page with `status`, and a message (escaped) when there is one.
pub(crate) fn page(status: StatusCode, message: Option<&str>) -> Response {
    let html = LOGIN_HTML
        .replace("{{hidden}}", if message.is_some() { "" } else { " hidden" })
        .replace("{{message}}", &escape(message.unwrap_or("")));
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// `GET /login`.
pub(crate) async fn show(State(gate): State<Arc<Gate>>) -> Response {
    if !gate.auth_enabled() {
        return see_other("/");
    }
    page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login` (a form with `token`): 303 to the dashboard with the cookie set, or the
/// page again saying why not (401 for a token nobody issued). The token is never echoed.
pub(crate) async fn submit(
    State(gate): State<Arc<Gate>>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !gate.auth_enabled() {
        return see_other("/");
    }
    let token = form.token.trim();
    if token.is_empty() {
        return page(StatusCode::UNAUTHORIZED, Some("Paste a token to sign in."));
    }
    if !auth::cookie_safe(token) {
        return page(
            StatusCode::BAD_REQUEST,
            Some(
                "This token cannot be kept in a cookie (it holds spaces, quotes, commas, \
                 semicolons or backslashes); use a token of letters, digits and - _ . ~",
            ),
        );
    }
    if let Err(refused) = gate.known_token(token) {
        return page(
            crate::edge::http::status_of(refused.kind()),
            Some("That token is not known to this coordinator."),
        );
    }
    let secure = if gate.http_tls() { "; Secure" } else { "" };
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = see_other("/");
    if let Ok(mut value) = header::HeaderValue::from_str(&cookie) {
        value.set_sensitive(true);
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /logout`: forgets the cookie.
pub(crate) async fn logout(State(gate): State<Arc<Gate>>) -> Response {
    let secure = if gate.http_tls() { "; Secure" } else { "" };
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}");
    let mut response = see_other("/login");
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_escaped() {
        assert_eq!(
            super::escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
