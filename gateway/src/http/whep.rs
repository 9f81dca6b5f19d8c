//! WHEP egress (draft-ietf-wish-whep): any WHEP player can watch a ferrocam camera.
//!
//! - `POST /whep/{device}` with `application/sdp` → `201 Created`, `Location`, `ETag`, the
//!   answer with all the device's candidates (players need not support server trickle).
//! - `PATCH /whep/{device}/{session}` with `application/trickle-ice-sdpfrag` → the player's
//!   candidates go to the device (`204`). ICE restarts are not supported (`422`).
//! - `DELETE /whep/{device}/{session}` ends the session.
//! - `OPTIONS` on both answers CORS preflights and advertises `Accept-Post: application/sdp`.
//!
//! A session URL is served by the gateway instance that created it: the session's routing state
//! lives here. So the URL names the instance — `/i/<instance>/whep/<device>/<session>` — and a
//! load balancer in front of several gateways routes on that prefix (docs/deploy.md). A request
//! that reaches another instance anyway gets `421 Misdirected Request`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use ferrocam_protocol::sdp;
use ferrocam_protocol::sdpfrag::{SdpFragment, ice_ufrag};
use ferrocam_protocol::viewer::ServerMsg;
use ferrocam_protocol::{DeviceId, ErrorCode, SessionId, ToDevice};
use tokio::sync::mpsc;

mod responses;

use super::scope::ScopedDevice;
use super::{AppState, new_session_id};
use crate::auth::Principal;
use crate::rate::TokenBucket;
use crate::relay::{OfferOptions, Refusal, ViewerId};
use responses::{RETRY_OFFLINE_SECS, link_headers, problem, refusal_response, retry_after};

const SDP: &str = "application/sdp";
const SDP_FRAG: &str = "application/trickle-ice-sdpfrag";

/// The WHEP sessions this instance created.
#[derive(Default)]
pub struct WhepSessions {
    sessions: Mutex<HashMap<SessionId, WhepSession>>,
}

struct WhepSession {
    device: DeviceId,
    /// The id of the principal that created it (`Principal::id`); only it may PATCH or DELETE.
    owner: String,
    viewer: ViewerId,
    etag: String,
    ice_ufrag: Option<String>,
    patches: TokenBucket,
}

impl WhepSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, WhepSession>> {
        self.sessions.lock().expect("whep sessions lock")
    }
}

pub fn routes(body_limit: usize) -> Router<AppState> {
    let endpoint: MethodRouter<AppState> = post(create).options(preflight);
    Router::new()
        .route("/whep/:device", endpoint)
        .route(
            "/whep/:device/:session",
            axum::routing::patch(patch)
                .delete(delete)
                .options(preflight),
        )
        .route(
            "/i/:instance/whep/:device/:session",
            axum::routing::patch(routed_patch)
                .delete(routed_delete)
                .options(preflight),
        )
        .layer(DefaultBodyLimit::max(body_limit))
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("accept-post", SDP),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS.as_str(),
                "POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS.as_str(),
                "Content-Type, If-Match, Authorization",
            ),
            (header::ACCESS_CONTROL_MAX_AGE.as_str(), "600"),
        ],
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// `POST /whep/{device}`: offer in, answer out.
async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ScopedDevice(device): ScopedDevice,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match accept_offer(&state, &device, &headers, body) {
        Ok(offer) => offer,
        Err(refusal) => return *refusal,
    };

    let viewer = state.relay.new_viewer();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ufrag = ice_ufrag(&offer).map(str::to_owned);
    let options = OfferOptions {
        trickle: false,
        role: state.role_for(&principal),
        // WHEP is for watching: a player's microphone is never played.
        talk: false,
        user: principal.name.clone(),
        owner: principal.id.clone(),
        device_ice: state
            .settings
            .device_ice_for(&format!("device-whep{}", viewer.0)),
    };
    let session = match state.relay.offer(
        viewer,
        &tx,
        device.clone(),
        offer,
        options,
        new_session_id(),
    ) {
        Ok(session) => session,
        Err(Refusal { code, message }) => {
            state.metrics.offers.count("whep", Err(code));
            return refusal_response(code, message);
        }
    };
    drop(tx); // the relay holds the sender now; the channel closes when the session ends

    let sdp = match wait_for_answer(&state, &mut rx).await {
        Ok(sdp) => sdp,
        Err(Some((code, message))) => return refusal_response(code, message),
        Err(None) => {
            state.relay.expire_unanswered(&session);
            return problem(
                StatusCode::GATEWAY_TIMEOUT,
                format!("device {device} did not answer"),
            );
        }
    };

    let etag = format!("\"{session}\"");
    state.whep.lock().insert(
        session.clone(),
        WhepSession {
            device: device.clone(),
            owner: principal.id.clone(),
            viewer,
            etag: etag.clone(),
            ice_ufrag: ufrag,
            // A player sends a handful of PATCHes; hundreds a second is abuse.
            patches: TokenBucket::new(20, 10.0),
        },
    );
    forget_when_ended(&state, session.clone(), rx);
    created_response(&state, &device, &session, viewer, etag, sdp)
}

/// The POST's checks before anything reaches the relay, in order: media type, UTF-8, a known
/// and online device, an SDP offer at all. Returns the offer, or the response refusing it
/// (boxed: a `Response` is large next to a `String`).
fn accept_offer(
    state: &AppState,
    device: &DeviceId,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<String, Box<Response>> {
    if !content_type_is(headers, SDP) {
        return Err(Box::new(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be application/sdp",
        )));
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8",
        )));
    };
    match state.relay.device(device) {
        None => {
            return Err(Box::new(problem(
                StatusCode::NOT_FOUND,
                format!("no device called {device}"),
            )));
        }
        Some(status) if !status.online => {
            return Err(Box::new(retry_after(
                StatusCode::CONFLICT,
                RETRY_OFFLINE_SECS,
                format!("device {device} is offline"),
            )));
        }
        Some(_) => {}
    }
    // Not SDP at all is the player's mistake (400), not a codec mismatch for the device to
    // report (406).
    if !sdp::is_session_description(&offer) {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "the body is not an SDP offer (one starts with v=0 and has a media section)",
        )));
    }
    Ok(offer)
}

/// Waits (up to the answer timeout) for the device's answer on the session's channel and
/// counts the outcome. `Err(Some(..))` is the device's or relay's refusal, `Err(None)` the
/// timeout.
async fn wait_for_answer(
    state: &AppState,
    rx: &mut mpsc::UnboundedReceiver<ServerMsg>,
) -> Result<String, Option<(ErrorCode, String)>> {
    let answer = tokio::time::timeout(state.settings.answer_timeout, async {
        loop {
            match rx.recv().await {
                Some(ServerMsg::Answer { sdp, .. }) => return Ok(sdp),
                Some(ServerMsg::Error { code, message, .. }) => return Err((code, message)),
                Some(ServerMsg::HangUp { reason, .. }) => {
                    return Err((ErrorCode::Internal, reason));
                }
                Some(_) => continue,
                None => return Err((ErrorCode::Internal, "session ended".to_owned())),
            }
        }
    })
    .await;
    let outcome = match &answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((code, _))) => Err(*code),
        Err(_) => Err(ErrorCode::Timeout),
    };
    state.metrics.offers.count("whep", outcome);
    match answer {
        Ok(Ok(sdp)) => Ok(sdp),
        Ok(Err(refusal)) => Err(Some(refusal)),
        Err(_) => Err(None),
    }
}

/// Forgets the session when the relay ends it (device hang-up, error, DELETE): the relay drops
/// the session's sender, which closes `rx`.
fn forget_when_ended(
    state: &AppState,
    session: SessionId,
    mut rx: mpsc::UnboundedReceiver<ServerMsg>,
) {
    let whep = std::sync::Arc::clone(&state.whep);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {}
        whep.lock().remove(&session);
    });
}

/// `201 Created` with the answer, the instance-routed session URL, the ETag and the ICE
/// servers as `Link` headers.
fn created_response(
    state: &AppState,
    device: &DeviceId,
    session: &SessionId,
    viewer: ViewerId,
    etag: String,
    sdp: String,
) -> Response {
    let mut response = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, SDP.to_owned()),
            (
                header::LOCATION,
                format!("/i/{}/whep/{device}/{session}", state.relay.instance()),
            ),
            (header::ETAG, etag),
        ],
        sdp,
    )
        .into_response();
    for link in link_headers(&state.settings.ice_servers_for(&format!("whep{}", viewer.0))) {
        response.headers_mut().append(header::LINK, link);
    }
    response
}

/// Refuses a session URL of another instance.
fn misdirected(state: &AppState, instance: &str) -> Option<Response> {
    (instance != state.relay.instance().as_str()).then(|| {
        problem(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this session belongs to gateway instance {instance:?}; route /i/{instance}/ there"
            ),
        )
    })
}

/// `PATCH /i/{instance}/whep/{device}/{session}`.
async fn routed_patch(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((instance, device, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = misdirected(&state, &instance) {
        return refusal;
    }
    patch(state, principal, Path((device, session)), headers, body).await
}

/// `DELETE /i/{instance}/whep/{device}/{session}`.
async fn routed_delete(
    state: State<AppState>,
    principal: Extension<Principal>,
    Path((instance, device, session)): Path<(String, String, String)>,
) -> Response {
    if let Some(refusal) = misdirected(&state, &instance) {
        return refusal;
    }
    delete(state, principal, Path((device, session))).await
}

/// `PATCH /whep/{device}/{session}`: trickle ICE from the player.
async fn patch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((device, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Ok(device), Ok(session)) = (DeviceId::parse(&device), SessionId::parse(&session)) else {
        return problem(StatusCode::NOT_FOUND, "no such session");
    };
    let (viewer, frag) = match check_patch(&state, &principal, &device, &session, &headers, &body) {
        Ok(ok) => ok,
        Err((status, message)) => return problem(status, message),
    };
    for candidate in frag.candidates {
        let forwarded = state
            .relay
            .forward(viewer, &session, ToDevice::Candidate { candidate });
        if let Err(Refusal { code, message }) = forwarded {
            return refusal_response(code, message);
        }
    }
    if frag.end_of_candidates {
        let _ = state
            .relay
            .forward(viewer, &session, ToDevice::EndOfCandidates);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The PATCH preconditions, in the draft's order: session, media type, If-Match, body.
fn check_patch(
    state: &AppState,
    principal: &Principal,
    device: &DeviceId,
    session: &SessionId,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(ViewerId, SdpFragment), (StatusCode, String)> {
    let refuse = |status, message: &str| Err((status, message.to_owned()));
    let restart = || {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported; start a new session",
        )
    };
    let mut sessions = state.whep.lock();
    let Some(entry) = sessions
        .get_mut(session)
        .filter(|s| &s.device == device && s.owner == principal.id)
    else {
        return refuse(StatusCode::NOT_FOUND, "no such session");
    };
    if !content_type_is(headers, SDP_FRAG) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH bodies must be application/trickle-ice-sdpfrag",
        );
    }
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => {
            return refuse(StatusCode::PRECONDITION_REQUIRED, "If-Match is required");
        }
        // `*` is how a player asks for an ICE restart.
        Some("*") => return restart(),
        Some(tag) if tag.trim() != entry.etag => {
            return refuse(
                StatusCode::PRECONDITION_FAILED,
                "If-Match does not match the ICE session",
            );
        }
        Some(_) => {}
    }
    if !entry.patches.try_take() {
        state.metrics.rate_limited.inc();
        return refuse(StatusCode::TOO_MANY_REQUESTS, "too many PATCH requests");
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "the fragment is not UTF-8".to_owned(),
        )
    })?;
    let frag = SdpFragment::parse(text).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    // New ICE credentials also mean a restart.
    if frag.ice_ufrag.is_some() && frag.ice_ufrag != entry.ice_ufrag {
        return restart();
    }
    Ok((entry.viewer, frag))
}

/// `DELETE /whep/{device}/{session}`: the player is done.
async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((device, session)): Path<(String, String)>,
) -> Response {
    let (Ok(device), Ok(session)) = (DeviceId::parse(&device), SessionId::parse(&session)) else {
        return problem(StatusCode::NOT_FOUND, "no such session");
    };
    let entry = {
        let mut sessions = state.whep.lock();
        match sessions.get(&session) {
            Some(entry) if entry.device == device && entry.owner == principal.id => {
                sessions.remove(&session)
            }
            _ => None,
        }
    };
    let Some(entry) = entry else {
        return problem(StatusCode::NOT_FOUND, "no such session");
    };
    let reason = "WHEP session deleted".into();
    match state
        .relay
        .forward(entry.viewer, &session, ToDevice::HangUp { reason })
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(Refusal { message, .. }) => problem(StatusCode::NOT_FOUND, message),
    }
}
