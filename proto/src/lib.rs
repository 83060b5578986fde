//! Wire types of e2e-backups: the gRPC services and the sealed backup formats,
//! generated from `proto/` at build time. Packages are versioned; a breaking
//! change gets a new package (`v2`) next to the old one.

pub mod codec;

/// The encoded `FileDescriptorSet` of every package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub mod storage {
    pub mod v2 {
        tonic::include_proto!("e2ebackup.storage.v2");
    }
    pub mod v3 {
        tonic::include_proto!("e2ebackup.storage.v3");
    }
}

pub mod backup {
    pub mod v2 {
        tonic::include_proto!("e2ebackup.backup.v2");
    }
    pub mod v3 {
        tonic::include_proto!("e2ebackup.backup.v3");
    }
}

pub mod vault {
    pub mod v2 {
        tonic::include_proto!("e2ebackup.vault.v2");
    }
}
