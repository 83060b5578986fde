//! The gRPC face of the v2 service: authentication, request parsing and
//! logging; the decisions are in [`chunks`], [`commit`] and [`gc`].

use std::pin::Pin;
use std::sync::Arc;

use account_token::AccountId;
use account_token::grpc::account;
use e2eb_proto::storage::v2::blob_gateway_server::BlobGateway;
use e2eb_proto::storage::v2::{
    CommitRequest, CommitResponse, DeleteBackupRequest, DeleteBackupResponse, GetBackupRequest,
    GetBackupResponse, GetChunkRequest, GetChunkResponse, GetManifestRequest, GetManifestResponse,
    HasChunksRequest, HasChunksResponse, PutChunkRequest, PutChunkResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, instrument};

use crate::config::Limits;
use crate::download;
use crate::error::ServiceError;
use crate::locks::CommitLocks;
use crate::metrics::GatewayMetrics;
use crate::store::{Store, StoreError};
use crate::v2::layout::{self, ChunkId};
use crate::v2::uploads::Uploads;
use crate::v2::{chunks, commit, record};

pub struct Gateway {
    store: Store,
    limits: Limits,
    locks: Arc<CommitLocks>,
    uploads: Uploads,
    metrics: GatewayMetrics,
}

impl Gateway {
    pub fn new(store: Store, limits: Limits, locks: Arc<CommitLocks>) -> Self {
        Self {
            store,
            limits,
            locks,
            uploads: Uploads::default(),
            metrics: GatewayMetrics::default(),
        }
    }

    /// Counts commits and deletions into `metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    async fn manifest(
        &self,
        account: &AccountId,
        generation: u64,
    ) -> Result<Vec<u8>, ServiceError> {
        let current = record::read(&self.store, account)
            .await?
            .ok_or(ServiceError::NoBackup)?;
        if current.generation != generation {
            return Err(ServiceError::GenerationNotCommitted {
                requested: generation,
                committed: current.generation,
            });
        }
        let manifest = self
            .store
            .get_small(&layout::manifest_key(account, generation))
            .await?
            .ok_or_else(|| {
                StoreError::Other(format!(
                    "the manifest of committed generation {generation} is missing"
                ))
            })?;
        Ok(manifest.to_vec())
    }

    /// Deletes everything of the account. The commit record goes first, so
    /// no half-deleted backup is ever presented as committed.
    async fn delete(&self, account: &AccountId) -> Result<u64, ServiceError> {
        let _guard = self.locks.lock(account).await;
        self.uploads.forget(account);
        let objects = self.store.list(&layout::account_prefix(account)).await?;
        let record = layout::record_key(account);
        self.store.delete(&record).await?;
        let count = objects.len() as u64;
        let rest = objects
            .into_iter()
            .map(|object| object.key)
            .filter(|key| *key != record)
            .collect();
        self.store.delete_all(rest).await?;
        Ok(count)
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<GetChunkResponse, Status>> + Send>>;

fn traced(request_account: Result<AccountId, Status>) -> Result<AccountId, Status> {
    let account = request_account?;
    tracing::Span::current().record("account", account.as_str());
    Ok(account)
}

#[tonic::async_trait]
impl BlobGateway for Gateway {
    #[instrument(skip_all, fields(account))]
    async fn has_chunks(
        &self,
        request: Request<HasChunksRequest>,
    ) -> Result<Response<HasChunksResponse>, Status> {
        let account = traced(account(&request))?;
        let asked = request.into_inner().chunk_ids;
        if asked.len() > chunks::MAX_IDS_PER_CALL {
            return Err(ServiceError::TooManyIds {
                count: asked.len(),
                limit: chunks::MAX_IDS_PER_CALL,
            }
            .into());
        }
        let ids = layout::parse_ids(&asked)?;
        let present = chunks::present(&self.store, &account, &ids).await?;
        debug!(
            asked = ids.len(),
            present = present.len(),
            "chunks looked up"
        );
        Ok(Response::new(HasChunksResponse {
            present: present.iter().map(|id| id.as_str().to_owned()).collect(),
        }))
    }

    #[instrument(skip_all, fields(account))]
    async fn put_chunk(
        &self,
        request: Request<Streaming<PutChunkRequest>>,
    ) -> Result<Response<PutChunkResponse>, Status> {
        let account = traced(account(&request))?;
        let (id, stored) =
            chunks::put(&self.store, &self.limits, &account, request.into_inner()).await?;
        // Also a chunk that was already there: it may be an orphan the next
        // commit should see.
        self.uploads.record(&account, id.as_str());
        debug!(chunk_id = id.as_str(), stored, "chunk received");
        Ok(Response::new(PutChunkResponse { stored }))
    }

    type GetChunkStream = ChunkStream;

    #[instrument(skip_all, fields(account))]
    async fn get_chunk(
        &self,
        request: Request<GetChunkRequest>,
    ) -> Result<Response<Self::GetChunkStream>, Status> {
        let account = traced(account(&request))?;
        let id = ChunkId::parse(&request.into_inner().chunk_id)?;
        crate::failpoint::hit_after_passes("get-chunk:after-5");
        let body = chunks::get(&self.store, &account, &id).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(download::pump(body, tx, |data| GetChunkResponse { data }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(account))]
    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let account = traced(account(&request))?;
        let request = request.into_inner();
        let expected_generation = request.expected_generation;
        let chunk_count = request.chunk_ids.len();
        let committed = commit::commit(
            &self.store,
            &self.limits,
            &self.locks,
            &self.uploads,
            &account,
            request,
        )
        .await
        .inspect_err(|error| {
            info!(expected_generation, chunk_count, %error, "commit refused");
        })?;
        (self.metrics).committed(committed.stored_bytes, committed.deleted_chunks);
        info!(
            generation = committed.generation,
            chunk_count,
            deleted_chunks = committed.deleted_chunks,
            stored_bytes = committed.stored_bytes,
            "generation committed"
        );
        Ok(Response::new(CommitResponse {
            generation: committed.generation,
            deleted_chunks: committed.deleted_chunks,
            stored_bytes: committed.stored_bytes,
        }))
    }

    #[instrument(skip_all, fields(account))]
    async fn get_backup(
        &self,
        request: Request<GetBackupRequest>,
    ) -> Result<Response<GetBackupResponse>, Status> {
        let account = traced(account(&request))?;
        let current = record::read(&self.store, &account)
            .await?
            .ok_or(ServiceError::NoBackup)?;
        Ok(Response::new(GetBackupResponse {
            generation: current.generation,
            committed_at: current.committed_at,
            chunk_count: current.chunk_ids.len() as u64,
            stored_bytes: current.stored_bytes,
            manifest_size: current.manifest_size,
        }))
    }

    #[instrument(skip_all, fields(account))]
    async fn get_manifest(
        &self,
        request: Request<GetManifestRequest>,
    ) -> Result<Response<GetManifestResponse>, Status> {
        let account = traced(account(&request))?;
        let generation = request.into_inner().generation;
        let manifest = self.manifest(&account, generation).await?;
        Ok(Response::new(GetManifestResponse { manifest }))
    }

    #[instrument(skip_all, fields(account))]
    async fn delete_backup(
        &self,
        request: Request<DeleteBackupRequest>,
    ) -> Result<Response<DeleteBackupResponse>, Status> {
        let account = traced(account(&request))?;
        let deleted_objects = self.delete(&account).await?;
        info!(deleted_objects, "backup deleted");
        Ok(Response::new(DeleteBackupResponse { deleted_objects }))
    }
}
