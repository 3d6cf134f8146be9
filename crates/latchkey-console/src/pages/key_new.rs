//! The create form: shown with a one-time token; a refused create (the API's 4xx, or a
//! field the console cannot read) shows it again, as typed, with the reason and a new
//! token, so nothing typed is lost and the claimed token is not needed again.

use askama::Template;
use axum::response::Response;
use http::Method;
use latchkey_admin::api::KeyWithSecret;

use crate::errors::UiError;
use crate::extract::{Fields, Posted, Signed};
use crate::pages::keys::{SecretPage, claim_once};
use crate::view::{self, Nav};

/// The form's fields, as typed (blank on a new form).
#[derive(Debug, Default)]
pub(crate) struct Typed {
    pub(crate) user: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) env: String,
    pub(crate) scopes: String,
    pub(crate) expires_in_days: String,
    pub(crate) rate_limits: String,
    pub(crate) credits: String,
    pub(crate) refill: String,
    pub(crate) allowed_ips: String,
    pub(crate) meta: String,
}

impl Typed {
    /// The fields as typed, but for one holding a key's full text (pasted by mistake):
    /// a secret is not written into the page again, and comes back blank.
    fn of(fields: &Fields) -> Typed {
        let get = |name: &str| {
            let typed = fields.get(name);
            match latchkey_core::find_keys(typed).next() {
                Some(_) => String::new(),
                None => typed.to_owned(),
            }
        };
        Typed {
            user: get("user"),
            name: get("name"),
            description: get("description"),
            env: get("env"),
            scopes: get("scopes"),
            expires_in_days: get("expires_in_days"),
            rate_limits: get("rate_limits"),
            credits: get("credits"),
            refill: get("refill"),
            allowed_ips: get("allowed_ips"),
            meta: get("meta"),
        }
    }
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage {
    nav: Nav,
    once: String,
    form: Typed,
    /// Why the last submission was refused.
    error: Option<String>,
}

/// The form for `signed`'s session with a new one-time token; refused (no form, no token)
/// to a key that may not create keys, as the keys page shows it no button.
fn form(signed: &Signed, form: Typed, error: Option<String>) -> Result<Response, UiError> {
    if !signed.can(WRITE) {
        return Err(UiError::NotAllowed(WRITE));
    }
    super::render(&NewKeyPage {
        nav: signed.nav(),
        once: signed.console.sessions.issue_form(&signed.session_id),
        form,
        error,
    })
}

/// `GET /ui/keys/new`: the create form, with a one-time token.
pub(crate) async fn new(signed: Signed) -> Result<Response, UiError> {
    form(&signed, Typed::default(), None)
}

/// What creating a key takes.
const WRITE: &str = "latchkey:keys:write";

/// `POST /ui/keys`: creates a key through `POST /v1/keys`; the answer shows its secret. A
/// refusal shows the form again, as typed, with the refusal's status and words.
pub(crate) async fn create(posted: Posted) -> Result<Response, UiError> {
    claim_once(&posted)?;
    let refused = match create_key(&posted).await {
        Ok(page) => return page.respond(),
        Err(e) => e,
    };
    let Some((status, why)) = refused.refusal() else {
        return Err(refused);
    };
    let mut response = form(&posted.signed, Typed::of(&posted.fields), Some(why))?;
    *response.status_mut() = status;
    Ok(response)
}

/// The key the form describes, made; its secret's page.
async fn create_key(posted: &Posted) -> Result<SecretPage, UiError> {
    let fields = &posted.fields;
    let mut body = serde_json::json!({
        "user_id": fields.get("user"),
        "name": fields.get("name"),
        "env": match fields.get("env") { "" => "live", env => env },
    });
    if let Some(description) = fields.optional("description") {
        body["description"] = description.into();
    }
    // Blank scopes leave the key unrestricted (the user's permissions).
    if let Some(scopes) = fields.optional("scopes") {
        body["scopes"] = super::split_list(&scopes).into();
    }
    if let Some(days) = fields.optional("expires_in_days") {
        let days: i64 = days
            .parse()
            .ok()
            .filter(|d| (1..=3660).contains(d))
            .ok_or_else(|| UiError::BadForm("expiry: a number of days, 1 to 3660".to_owned()))?;
        let at = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        body["expires_at"] = view::rfc3339(at).into();
    }
    crate::usage::add_to(&mut body, fields)?;
    let created: KeyWithSecret = posted.signed.send(Method::POST, "/v1/keys", body).await?;
    Ok(SecretPage {
        nav: posted.signed.nav(),
        heading: "Key created",
        key: created.key,
        secret: created.secret,
    })
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn a_key_typed_into_a_field_is_not_shown_again() {
        let key = latchkey_core::ApiKey::generate(
            &latchkey_core::Prefix::default(),
            latchkey_core::Env::Live,
        );
        let form = format!("name=ci&description=for+{}&user=bot", key.expose());
        let typed = Typed::of(&Fields::parse(form.as_bytes()).unwrap());
        assert_eq!(typed.description, "");
        assert_eq!((typed.name.as_str(), typed.user.as_str()), ("ci", "bot"));
    }

    #[test]
    fn status_of_a_refusal() {
        assert_eq!(
            UiError::BadForm("x".into()).refusal(),
            Some((StatusCode::BAD_REQUEST, "x".to_owned()))
        );
        assert!(UiError::Resubmitted.refusal().is_none());
        let problem = |status: u16| {
            UiError::Api(Box::new(latchkey_admin::Problem {
                type_: "urn:latchkey:problem:x".into(),
                title: "X".into(),
                status,
                code: "x".into(),
                detail: "said".into(),
                field: None,
                retry_after: None,
                limit: None,
                permission: None,
            }))
        };
        assert_eq!(
            problem(409).refusal(),
            Some((StatusCode::CONFLICT, "said".to_owned()))
        );
        // A write that may have been done is not offered again.
        assert!(problem(503).refusal().is_none());
        assert!(problem(500).refusal().is_none());
    }
}
