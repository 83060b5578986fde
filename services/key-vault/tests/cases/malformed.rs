//! A request whose bytes are not the protobuf message the method takes is
//! the caller's error: INVALID_ARGUMENT saying so, never INTERNAL; and the
//! vault serves the next well-formed call as before.

use bytes::{Buf, BufMut};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::support::*;

/// Sends and receives bytes as they are, to put garbage on the wire.
#[derive(Debug, Clone, Default)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn a_malformed_message_is_invalid_argument_not_internal() {
    let dir = tempfile::tempdir().unwrap();
    let vault = TestVault::start(dir.path(), policy(10)).await.unwrap();
    let url = format!("https://{}", vault.addr);
    let channel = rpc::endpoint(&url, &trust(&vault.dir), &rpc::ChannelOptions::default())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    // Field 1 as a length-delimited value that claims 100 bytes and has 2.
    let garbage = vec![0x0a, 100, 1, 2];
    let mut request = tonic::Request::new(garbage);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", vault.token("alice")).parse().unwrap(),
    );
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/e2ebackup.vault.v2.KeyVault/LoginStart",
    );
    let status = grpc
        .unary::<Vec<u8>, Vec<u8>, RawBytes>(request, path, RawBytes)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{status:?}");

    // The honest client right after: served as usual.
    let mut alice = vault.client("alice").await;
    assert!(alice.info().await.is_ok());
    vault.stop().await;
}
