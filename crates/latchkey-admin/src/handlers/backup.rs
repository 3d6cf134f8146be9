//! `GET /v1/backup`: a consistent backup of the whole store, streamed.

use std::io::{self, Seek, SeekFrom};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use latchkey_core::StoreError;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedMutexGuard, watch};

use crate::caller::{Caller, perm};
use crate::error::{AppError, Problem};
use crate::state::AppState;

/// How much of the backup is read per chunk of the response.
const CHUNK: usize = 64 * 1024;
/// How long a client may take nothing of the answer before it is cut off: a client that
/// stops reading would otherwise hold the one backup turn, and a copy of the store on
/// disk, for as long as its connection stays open.
const STALL: Duration = Duration::from_secs(60);

/// A backup of every record, as `latchkey restore` reads it: all writes acknowledged
/// before the request, none after.
///
/// The store is copied into a temporary file first (writers wait for that copy, readers
/// do not), which is then streamed: a slow client never holds writers back. The response
/// is `application/octet-stream`; its `X-Latchkey-Backup-Seq` header names the newest
/// change it holds. The format is described in core's `Store::backup`.
///
/// One backup at a time, from its copy to the end of its answer: each is a copy of the
/// whole store on the temporary directory's disk, taken while writers wait, and a client
/// that goes away does not stop the copy. Another meanwhile is answered 429
/// `backup_in_progress`. A client that takes nothing of the answer for a minute is cut
/// off: its copy is deleted and the next backup may be taken.
#[utoipa::path(get, path = "/v1/backup", operation_id = "backup", tag = "operations",
    security(("bearer" = ["latchkey:backup"])),
    responses(
        (status = 200, description = "The backup file", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("X-Latchkey-Backup-Seq" = u64, description = "The newest change the backup holds"),
                ("Cache-Control" = String, description = "`no-store`: the backup is in no cache"))),
        (status = 401, description = "Missing or invalid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks latchkey:backup (`insufficient_permission`), or its user is in a tenant (`tenant_forbidden`): a backup holds every tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`backup_in_progress`: another backup is being taken or sent", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The backup could not be written, e.g. to a temporary directory (TMPDIR) that cannot be written (see the server log)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The keystore is unavailable", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "`storage_full`: the disk of the temporary directory (TMPDIR), where the backup is copied first, is full", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn backup(
    State(state): State<AppState>,
    caller: Caller<perm::Backup>,
) -> Result<Response, AppError> {
    caller.ensure_global()?;
    let Ok(taking) = state.backup.clone().try_lock_owned() else {
        return Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "backup_in_progress",
            "another backup is being taken or sent: try again when it is done",
        ));
    };
    // Moved into the copy, which goes on should the client go: the next backup waits
    // for its end.
    let (file, header, taking) = state
        .run(move |store| {
            let mut file = tempfile::tempfile().map_err(staging_failed)?;
            let header = store.backup(&mut file).map_err(|e| match e {
                StoreError::Storage(cause) => match cause.downcast::<io::Error>() {
                    Ok(io) => staging_failed(*io),
                    Err(cause) => StoreError::Storage(cause).into(),
                },
                e => e.into(),
            })?;
            file.seek(SeekFrom::Start(0)).map_err(staging_failed)?;
            Ok((file, header, taking))
        })
        .await?;
    let file = tokio::fs::File::from_std(file);
    let chunks = Sending::start(file, taking).into_stream();
    let name = format!("attachment; filename=\"latchkey-{}.backup\"", header.seq);
    let mut response = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(name) = HeaderValue::try_from(name) {
        headers.insert(CONTENT_DISPOSITION, name);
    }
    headers.insert("x-latchkey-backup-seq", HeaderValue::from(header.seq));
    // Every key's hash and the key that keys them: as the answer holding a new secret, kept
    // by no cache on the way.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The copy could not be made in the temporary directory (`TMPDIR`, where
/// [`tempfile::tempfile`] puts it): 507 `storage_full` when its disk is full, else a 500
/// whose log line names the directory, the usual cause being one that cannot be written (a
/// read-only container without a tmpfs there).
fn staging_failed(e: io::Error) -> AppError {
    let dir = std::env::temp_dir();
    if e.kind() == io::ErrorKind::StorageFull {
        latchkey_core::warn_limited!(error = %e, tmpdir = %dir.display(), "backup refused: the temporary directory's disk is full");
        return AppError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "the disk of the server's temporary directory (TMPDIR), where a backup is copied \
             before it is sent, is full: nothing was taken; free space there, or point TMPDIR \
             at a disk with room for a copy of the store",
        );
    }
    tracing::error!(error = %e, tmpdir = %dir.display(), "a backup could not be copied into the temporary directory (TMPDIR): it must be writable, with room for a copy of the store");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the backup could not be copied into the server's temporary directory (TMPDIR); \
         the server log has the detail",
    )
}

/// The copy of the store being sent, and the backup turn.
type Copy = (tokio::fs::File, OwnedMutexGuard<()>);

/// A backup's copy being sent, with the backup turn it holds. Both go when the answer is
/// sent whole, when its client goes (the stream dropped), or when the client has taken
/// nothing for [`STALL`]: a watchdog then drops them, and the stream, polled again, fails.
struct Sending {
    /// Taken out while a chunk is read; `None` once the watchdog cut the client off.
    copy: Arc<Mutex<Option<Copy>>>,
    /// Bumped at every chunk sent; the watchdog ends when this goes (the stream dropped).
    progress: watch::Sender<()>,
}

impl Sending {
    fn start(file: tokio::fs::File, taking: OwnedMutexGuard<()>) -> Sending {
        let copy = Arc::new(Mutex::new(Some((file, taking))));
        let (progress, mut sent) = watch::channel(());
        let watched = Arc::downgrade(&copy);
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(STALL, sent.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        if let Some(copy) = watched.upgrade() {
                            let cut = copy.lock().unwrap_or_else(PoisonError::into_inner).take();
                            if cut.is_some() {
                                tracing::warn!(
                                    stall_s = STALL.as_secs(),
                                    "a backup's client took nothing of it for too long: cut off, the next backup may be taken"
                                );
                            }
                        }
                        return;
                    }
                }
            }
        });
        Sending { copy, progress }
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
        stream::unfold(Some(self), |sending| async move {
            let sending = sending?;
            let taken = sending
                .copy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let Some((mut file, taking)) = taken else {
                let cut = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took nothing of the backup for too long",
                );
                return Some((Err(cut), None));
            };
            let mut buf = Vec::with_capacity(CHUNK);
            match (&mut file).take(CHUNK as u64).read_to_end(&mut buf).await {
                Ok(0) => None,
                Ok(_) => {
                    *sending.copy.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((file, taking));
                    sending.progress.send_replace(());
                    Some((Ok(buf), Some(sending)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the backup's temporary file");
                    Some((Err(e), None))
                }
            }
        })
    }
}
