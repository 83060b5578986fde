//! The gRPC face of the v3 service: authentication, turning messages into
//! domain requests, a deadline on every call, bounded download messages and
//! logging; the decisions are in the operation modules.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use account_token::AccountId;
use account_token::grpc::account;
use bytes::Bytes;
use e2eb_proto::storage::v3::blob_gateway_server::BlobGateway;
use e2eb_proto::storage::v3::{
    CommitRequest, CommitResponse, DeleteBackupRequest, DeleteBackupResponse, GetBackupRequest,
    GetBackupResponse, GetManifestRequest, GetManifestResponse, GetPackRequest, GetPackResponse,
    ListUploadsRequest, ListUploadsResponse, PackInfo, PutPackRequest, PutPackResponse,
    put_pack_request,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument};

use crate::objects::Body;
use crate::v3::error::V3Error;
use crate::v3::put_pack::PackHeader;
use crate::v3::{Core, commit, delete, get_backup, get_pack, list_uploads, put_pack};

/// Largest data payload per download message.
pub const MESSAGE_BYTES: usize = 1024 * 1024;

pub struct Gateway {
    core: Arc<Core>,
    deadline: Duration,
}

impl Gateway {
    pub fn new(core: Arc<Core>, deadline: Duration) -> Self {
        Self { core, deadline }
    }

    /// Runs `call` within the request deadline.
    async fn within<T>(&self, call: impl Future<Output = Result<T, V3Error>>) -> Result<T, Status> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => result.map_err(Status::from),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the call did not finish within the gateway's deadline of {:?}; retry",
                self.deadline
            ))),
        }
    }
}

type DataStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn traced(request_account: Result<AccountId, Status>) -> Result<AccountId, Status> {
    let account = request_account?;
    tracing::Span::current().record("account", account.as_str());
    Ok(account)
}

/// Streams `body` out in messages of at most [`MESSAGE_BYTES`], coalescing
/// small reads.
fn pump<T: Send + 'static>(mut body: Body, wrap: fn(Vec<u8>) -> T) -> DataStream<T> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = Vec::with_capacity(MESSAGE_BYTES);
        while let Some(next) = body.next().await {
            let bytes = match next {
                Ok(bytes) => bytes,
                Err(error) => {
                    let _ = tx.send(Err(Status::from(V3Error::Storage(error)))).await;
                    return;
                }
            };
            let mut bytes = &bytes[..];
            while !bytes.is_empty() {
                let take = bytes.len().min(MESSAGE_BYTES - pending.len());
                pending.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if pending.len() == MESSAGE_BYTES {
                    let data = std::mem::replace(&mut pending, Vec::with_capacity(MESSAGE_BYTES));
                    if tx.send(Ok(wrap(data))).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(Ok(wrap(pending))).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn pack_info(entry: crate::v3::record::PackEntry) -> PackInfo {
    PackInfo {
        name: entry.name,
        size: entry.size,
    }
}

#[tonic::async_trait]
impl BlobGateway for Gateway {
    #[instrument(skip_all, fields(account))]
    async fn put_pack(
        &self,
        request: Request<Streaming<PutPackRequest>>,
    ) -> Result<Response<PutPackResponse>, Status> {
        let account = traced(account(&request))?;
        let mut stream = request.into_inner();
        let upload = async {
            let header = match stream.message().await.map_err(V3Error::Stream)? {
                Some(PutPackRequest {
                    part: Some(put_pack_request::Part::Header(header)),
                }) => header,
                Some(_) => {
                    return Err(V3Error::Malformed(
                        "an upload must start with its header".into(),
                    ));
                }
                None => return Err(V3Error::Malformed("the upload is empty".into())),
            };
            let header = PackHeader {
                name: header.name,
                size: header.size,
            };
            let data = stream.map(|message| match message {
                Ok(PutPackRequest {
                    part: Some(put_pack_request::Part::Data(data)),
                }) => Ok(Bytes::from(data)),
                Ok(_) => Err(V3Error::Malformed(
                    "after the header an upload carries only data".into(),
                )),
                Err(status) => Err(V3Error::Stream(status)),
            });
            let (name, size) = (header.name.clone(), header.size);
            put_pack::put_pack(&self.core, &account, header, data).await?;
            Ok((name, size))
        };
        let (name, size) = self.within(upload).await.inspect_err(|status| {
            info!(code = ?status.code(), message = status.message(), "pack refused");
        })?;
        self.core.metrics.packs_stored.inc();
        self.core.metrics.pack_bytes_stored.inc_by(size);
        info!(pack = %name, size, "pack stored");
        Ok(Response::new(PutPackResponse {}))
    }

    type GetPackStream = DataStream<GetPackResponse>;

    #[instrument(skip_all, fields(account))]
    async fn get_pack(
        &self,
        request: Request<GetPackRequest>,
    ) -> Result<Response<Self::GetPackStream>, Status> {
        let account = traced(account(&request))?;
        let request = request.into_inner();
        let body = self
            .within(get_pack::get_pack(
                &self.core,
                &account,
                &request.name,
                request.offset,
                request.length,
            ))
            .await?;
        Ok(Response::new(pump(body, |data| GetPackResponse { data })))
    }

    #[instrument(skip_all, fields(account))]
    async fn list_uploads(
        &self,
        request: Request<ListUploadsRequest>,
    ) -> Result<Response<ListUploadsResponse>, Status> {
        let account = traced(account(&request))?;
        let packs = self
            .within(list_uploads::list_uploads(&self.core, &account))
            .await?;
        Ok(Response::new(ListUploadsResponse {
            packs: packs.into_iter().map(pack_info).collect(),
        }))
    }

    #[instrument(skip_all, fields(account))]
    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let account = traced(account(&request))?;
        let request = request.into_inner();
        let expected = request.expected_generation;
        let pack_count = request.packs.len();
        let domain = commit::CommitRequest {
            expected,
            manifest: Bytes::from(request.manifest),
            packs: request.packs,
            abandoned: request.abandoned,
        };
        let committed = self
            .within(commit::commit(&self.core, &account, domain))
            .await
            .inspect_err(|status| {
                info!(expected, pack_count, code = ?status.code(), message = status.message(), "commit refused");
            })?;
        (self.core.metrics).committed(committed.stored_bytes, committed.deleted_packs);
        info!(
            generation = committed.generation,
            pack_count,
            deleted_packs = committed.deleted_packs,
            stored_bytes = committed.stored_bytes,
            "generation committed"
        );
        Ok(Response::new(CommitResponse {
            generation: committed.generation,
            deleted_packs: committed.deleted_packs,
            stored_bytes: committed.stored_bytes,
        }))
    }

    #[instrument(skip_all, fields(account))]
    async fn get_backup(
        &self,
        request: Request<GetBackupRequest>,
    ) -> Result<Response<GetBackupResponse>, Status> {
        let account = traced(account(&request))?;
        let backup = self
            .within(get_backup::get_backup(&self.core, &account))
            .await?;
        let record = backup.record;
        Ok(Response::new(GetBackupResponse {
            generation: record.generation,
            committed_at: record.committed_at,
            stored_bytes: record.stored_bytes,
            manifest_size: record.manifest_size,
            packs: record.packs.into_iter().map(pack_info).collect(),
            uncommitted_bytes: backup.uncommitted_bytes,
        }))
    }

    type GetManifestStream = DataStream<GetManifestResponse>;

    #[instrument(skip_all, fields(account))]
    async fn get_manifest(
        &self,
        request: Request<GetManifestRequest>,
    ) -> Result<Response<Self::GetManifestStream>, Status> {
        let account = traced(account(&request))?;
        let generation = request.into_inner().generation;
        let manifest = self
            .within(get_backup::get_manifest(&self.core, &account, generation))
            .await?;
        let body: Body = futures::stream::iter([Ok(manifest)]).boxed();
        Ok(Response::new(pump(body, |data| GetManifestResponse {
            data,
        })))
    }

    #[instrument(skip_all, fields(account))]
    async fn delete_backup(
        &self,
        request: Request<DeleteBackupRequest>,
    ) -> Result<Response<DeleteBackupResponse>, Status> {
        let account = traced(account(&request))?;
        let deleted_objects = self
            .within(delete::delete_backup(&self.core, &account))
            .await?;
        info!(deleted_objects, "backup deleted");
        Ok(Response::new(DeleteBackupResponse { deleted_objects }))
    }
}
