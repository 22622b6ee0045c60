//! Tandem's gRPC contracts: the generated messages, clients and servers, and the file
//! descriptor set that every server serves through reflection.

/// The encoded `FileDescriptorSet` of every Tandem proto (and its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tandem_descriptor.bin"));

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("tandem.common.v1");
    }
}

pub mod commissions {
    pub mod v1 {
        tonic::include_proto!("tandem.commissions.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("tandem.events.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("tandem.identity.v1");
    }
}

pub mod tiers {
    pub mod v1 {
        tonic::include_proto!("tandem.tiers.v1");
    }
}

pub mod deals {
    pub mod v1 {
        tonic::include_proto!("tandem.deals.v1");
    }
}
