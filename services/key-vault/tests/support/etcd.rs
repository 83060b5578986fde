//! A real etcd cluster of `n` members on loopback (Debian's `etcd-server`;
//! `make deps` installs it), each in its own temporary directory, killed
//! when dropped. For benchmarks and tests of the vault fleet.

use std::process::{Child, Command, Stdio};

use key_vault::store::RecordStore;
use key_vault::store::etcd::EtcdStore;

pub struct EtcdCluster {
    members: Vec<Child>,
    /// The client URLs of the members.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdCluster {
    /// Starts `n` members and returns once the cluster answers a read.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members: Vec::new(),
            endpoints: Vec::new(),
            _dir: dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(cluster._dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("start etcd (run `make deps`): {e}"))?;
            cluster.members.push(child);
            cluster.endpoints.push(client_url);
        }
        // Ready when a linearizable read succeeds, i.e. a leader exists.
        for _ in 0..400 {
            if let Ok(store) = EtcdStore::connect(&cluster.endpoints, "/probe").await
                && store.get_row("probe").await.is_ok()
            {
                return Ok(cluster);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the etcd cluster did not elect a leader")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}
