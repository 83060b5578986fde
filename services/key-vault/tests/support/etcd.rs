//! A real etcd cluster of `n` members on loopback (Debian's `etcd-server`;
//! `make deps` installs it), each in its own temporary directory, killed
//! when dropped. For benchmarks and tests of the vault fleet.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use key_vault::store::RecordStore;
use key_vault::store::etcd::EtcdStore;

pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    /// Each member's command line, to start it again on its data.
    commands: Vec<Vec<String>>,
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
            commands: Vec::new(),
            endpoints: Vec::new(),
            _dir: dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data_dir = cluster._dir.path().join(format!("m{i}"));
            let args: Vec<String> = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            cluster.members.push(Some(spawn(&args)?));
            cluster.commands.push(args);
            cluster.endpoints.push(client_url);
        }
        cluster.wait_for_quorum().await?;
        Ok(cluster)
    }

    /// Returns once a linearizable read succeeds, i.e. a leader exists.
    pub async fn wait_for_quorum(&self) -> anyhow::Result<()> {
        for _ in 0..400 {
            if let Ok(store) = EtcdStore::connect(&self.endpoints, "/probe").await
                && store.get_row("probe").await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the etcd cluster did not elect a leader")
    }

    /// Kills member `i` (SIGKILL), as a crashed host.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.members[i] = Some(spawn(&self.commands[i])?);
        Ok(())
    }
}

fn spawn(args: &[String]) -> anyhow::Result<Child> {
    Command::new("etcd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("start etcd (run `make deps`): {e}"))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
