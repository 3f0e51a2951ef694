//! This instance's leases: taking, renewing, losing and handing them over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use tokio::sync::watch;

use crate::metrics::{LATENCY_BUCKETS, Metrics, MetricsError};
use crate::state::store::{LeaseName, Store, StoreError, millis, unix_ms};

/// Why a lease stopped being this instance's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Another instance holds it now (this one's renewals did not reach the store in time).
    Taken,
    /// Its work was asked to end; the holder ends it and then finishes the lease.
    Ended,
    /// Handed over to another instance: on a graceful stop, or to even out the shares.
    HandedOver,
}

/// The answer to [`Leases::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// This instance holds it; with `ended`, its work was asked to end and this instance must
    /// end it (its last holder died before it could).
    Granted { ended: bool },
    /// Another live instance holds it, or (for a claim) this one holds its share already.
    Busy,
}

/// How long work handed over at a graceful stop goes on here after another instance took it.
const HANDOVER_OVERLAP: Duration = Duration::from_millis(500);
/// How long a graceful stop waits for others to take its work: within the shortest graceful
/// shutdown timeout that makes sense (Pingora ends the process after it).
const HANDOVER_WAIT: Duration = Duration::from_millis(900);
/// After this long without a holder, work is claimed even beyond the claimer's share.
const OVERDUE: Duration = Duration::from_secs(1);

/// Heartbeats (a third of the TTL each) an excess must last before it is handed over.
const EXCESS_BEATS: u32 = 3;

struct Held {
    lost: watch::Sender<Option<Lost>>,
    acquired: Instant,
}

/// The leases of this instance.
pub struct Leases {
    store: Arc<dyn Store>,
    /// This process's holder id, new at every start.
    instance: String,
    /// The instance's place among the live ones, kept across restarts and upgrades (its data
    /// directory's): an upgrade's old and new process count as one instance.
    slot: String,
    ttl: Duration,
    held: Mutex<HashMap<(String, String), Held>>,
    /// Work per namespace, and live instances, as of the last heartbeat.
    work: Mutex<HashMap<String, u64>>,
    instances: AtomicU64,
    /// The last holder of leases seen claimable, to tell a takeover from a first claim.
    last_holders: Mutex<HashMap<(String, String), String>>,
    /// Heartbeats in a row that found this instance over its share, by namespace.
    excess_beats: Mutex<HashMap<String, u32>>,
    /// No claims before this (ms since the epoch): after the store was away, the live holders
    /// renew first. `i64::MAX` while renewals fail.
    claims_from: AtomicI64,
    stopping: AtomicBool,
    metrics: LeaseMetrics,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("instance", &self.instance)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct LeaseMetrics {
    held: IntGaugeVec,
    takeovers: IntCounterVec,
    handovers: IntCounterVec,
    renewal_failures: IntCounter,
    instances: IntGauge,
    heartbeat: Histogram,
}

impl LeaseMetrics {
    fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
        let held = IntGaugeVec::new(
            Opts::new(
                "xsigate_leases_held",
                "Leases of live work (channel sets, agent logins) this instance holds, by plugin.",
            ),
            &["plugin"],
        )?;
        let takeovers = IntCounterVec::new(
            Opts::new(
                "xsigate_lease_takeovers_total",
                "Leases taken over from an instance that stopped renewing them, by plugin.",
            ),
            &["plugin"],
        )?;
        let handovers = IntCounterVec::new(
            Opts::new(
                "xsigate_lease_handovers_total",
                "Leases this instance handed over (graceful stop, evening out), by plugin.",
            ),
            &["plugin"],
        )?;
        let renewal_failures = IntCounter::new(
            "xsigate_lease_renewal_failures_total",
            "Lease heartbeats whose store round trip failed.",
        )?;
        let instances = IntGauge::new(
            "xsigate_cluster_instances",
            "Live instances on the store, as this instance's last heartbeat saw them.",
        )?;
        let heartbeat = Histogram::with_opts(
            HistogramOpts::new(
                "xsigate_store_heartbeat_seconds",
                "Store latency: the round trips of one lease heartbeat.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        metrics.register(Box::new(held.clone()))?;
        metrics.register(Box::new(takeovers.clone()))?;
        metrics.register(Box::new(handovers.clone()))?;
        metrics.register(Box::new(renewal_failures.clone()))?;
        metrics.register(Box::new(instances.clone()))?;
        metrics.register(Box::new(heartbeat.clone()))?;
        Ok(Self {
            held,
            takeovers,
            handovers,
            renewal_failures,
            instances,
            heartbeat,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(lease: &LeaseName<'_>) -> (String, String) {
    (lease.namespace.to_owned(), lease.name.to_owned())
}

impl Leases {
    pub fn new(
        store: Arc<dyn Store>,
        ttl: Duration,
        slot: String,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, MetricsError> {
        Ok(Arc::new(Self {
            store,
            instance: format!("{:032x}", rand::random::<u128>()),
            slot,
            ttl,
            held: Mutex::new(HashMap::new()),
            work: Mutex::new(HashMap::new()),
            instances: AtomicU64::new(1),
            last_holders: Mutex::new(HashMap::new()),
            excess_beats: Mutex::new(HashMap::new()),
            claims_from: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            metrics: LeaseMetrics::new(metrics)?,
        }))
    }

    /// Makes a plugin's series (leases held, takeovers, handovers) exist at zero from the start,
    /// as every series a dashboard or alert watches does.
    pub fn count_for(&self, namespace: &str) {
        self.count_held(namespace);
    }

    /// This process's holder id.
    pub fn holder(&self) -> &str {
        &self.instance
    }

    /// Joins the instances on the store, then renews this instance's leases every third of the
    /// TTL until the process ends. Call it outside any async runtime: it blocks for the first
    /// heartbeat, so that the plugins' first claims know the shares. `crashed` is the holder id
    /// of this instance's previous process when it died holding work: its leases are freed at
    /// once, so that its work resumes now rather than after the TTL.
    pub fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle, crashed: Option<&str>) {
        if let Some(crashed) = crashed {
            match runtime.block_on(self.store.lease_release_all(crashed, unix_ms())) {
                Ok(0) => {}
                Ok(freed) => tracing::info!(
                    leases = freed,
                    "this instance's previous process died holding work; taking it up again"
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot free the leases of this instance's previous process; its work resumes after their TTL");
                }
            }
        }
        runtime.block_on(self.heartbeat());
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(this.ttl / 3);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !this.stopping.load(Ordering::Acquire) {
                interval.tick().await;
                this.heartbeat().await;
            }
        });
    }

    /// Takes a lease. A claim (work found unowned, rather than work this instance was asked to
    /// do) is refused while this instance holds its share of the namespace, unless
    /// [`Leases::claimable`] offered it.
    pub async fn acquire(
        &self,
        lease: &LeaseName<'_>,
        claim: bool,
    ) -> Result<Acquired, StoreError> {
        // A stopping instance still takes work asked of it (a login that reached it during the
        // grace period): it was not handed over with the rest, so it moves after the TTL.
        if claim && self.stopping.load(Ordering::Acquire) {
            return Ok(Acquired::Busy);
        }
        if lock(&self.held).contains_key(&key(lease)) {
            return Ok(Acquired::Granted { ended: false });
        }
        // What the last listing of claimable work offered was weighed there already.
        let offered = lock(&self.last_holders).contains_key(&key(lease));
        if claim && !offered && self.held_in(lease.namespace) >= self.share(lease.namespace) {
            return Ok(Acquired::Busy);
        }
        let now = unix_ms();
        let until = now.saturating_add(millis(self.ttl));
        let Some(ended) = self
            .store
            .lease_acquire(lease, &self.instance, now, until)
            .await?
        else {
            return Ok(Acquired::Busy);
        };
        let last_holder = lock(&self.last_holders).remove(&key(lease));
        if last_holder.is_some_and(|holder| !holder.is_empty() && holder != self.instance) {
            self.metrics
                .takeovers
                .with_label_values(&[lease.namespace])
                .inc();
        }
        let (lost, _) = watch::channel(None);
        lock(&self.held).insert(
            key(lease),
            Held {
                lost,
                acquired: Instant::now(),
            },
        );
        self.count_held(lease.namespace);
        Ok(Acquired::Granted { ended })
    }

    /// Waits until this instance loses the lease; `None` if it does not hold it.
    pub async fn lost(&self, lease: &LeaseName<'_>) -> Option<Lost> {
        let mut lost = lock(&self.held).get(&key(lease))?.lost.subscribe();
        let reason = lost.wait_for(Option::is_some).await.ok()?;
        *reason
    }

    /// Hands a lease over: another instance may take it at once.
    pub async fn release(&self, lease: &LeaseName<'_>) -> Result<(), StoreError> {
        self.forget(lease);
        self.store
            .lease_release(lease, &self.instance, unix_ms())
            .await
    }

    /// Forgets a lease whose work is over.
    pub async fn finish(&self, lease: &LeaseName<'_>) -> Result<(), StoreError> {
        self.forget(lease);
        self.store.lease_finish(lease, &self.instance).await
    }

    /// Asks for the lease's work to end, wherever it runs.
    pub async fn end(&self, lease: &LeaseName<'_>) -> Result<(), StoreError> {
        self.store.lease_end(lease).await?;
        if let Some(held) = lock(&self.held).get(&key(lease)) {
            held.lost.send_replace(Some(Lost::Ended));
        }
        Ok(())
    }

    /// Leases of `namespace` under `prefix` that nobody holds, with whether their work was asked
    /// to end, as many as this instance's share leaves room for; none while it stops.
    pub async fn claimable(
        &self,
        namespace: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let now = unix_ms();
        if self.stopping.load(Ordering::Acquire) || now < self.claims_from.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let mut found = self
            .store
            .lease_claimable(namespace, prefix, now, limit)
            .await?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        // Work is up for grabs because an instance died or left: count again now rather than
        // at the last heartbeat, so that what a departing instance handed over is taken at once
        // and shared by those that remain.
        let until = now.saturating_add(millis(self.ttl));
        let instances = self
            .store
            .instance_heartbeat(&self.slot, now, until)
            .await?;
        self.instances.store(instances, Ordering::Relaxed);
        *lock(&self.work) = self.store.lease_counts().await?.into_iter().collect();
        // Work up to this instance's share is taken at once; beyond it, only work nobody took
        // for a while (better an uneven spread, evened out later, than work left undone).
        let room = usize::try_from(
            self.share(namespace)
                .saturating_sub(self.held_in(namespace)),
        )
        .unwrap_or(usize::MAX);
        let overdue = now.saturating_sub(millis(OVERDUE));
        let mut counted = 0;
        found.retain(|lease| {
            counted += 1;
            counted <= room || lease.unowned_since_ms <= overdue
        });
        let mut last_holders = lock(&self.last_holders);
        // Only the latest listing matters; older entries were taken or went.
        last_holders.retain(|(ns, _), _| ns != namespace);
        Ok(found
            .into_iter()
            .map(|lease| {
                last_holders.insert(
                    (namespace.to_owned(), lease.name.clone()),
                    lease.last_holder,
                );
                (lease.name, lease.ended)
            })
            .collect())
    }

    /// Hands every lease over: a graceful stop or upgrade. The store hears it first and the
    /// others (or the upgraded process) claim the work while it still runs here; see
    /// [`Leases::let_go`].
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let held: Vec<(String, String)> = lock(&self.held).keys().cloned().collect();
        tracing::info!(leases = held.len(), "handing this instance's leases over");
        if let Err(error) = self
            .store
            .lease_release_all(&self.instance, unix_ms())
            .await
        {
            tracing::warn!(%error, "handing the leases over failed; they free after their TTL");
        }
        self.let_go(held).await;
    }

    /// Stops the work of leases released in the store: each [`HANDOVER_OVERLAP`] after another
    /// instance took it (time for its new holder to open its channel: two channels of one set
    /// overlap briefly rather than none being open), the rest after [`HANDOVER_WAIT`].
    async fn let_go(&self, leases: Vec<(String, String)>) {
        let mut waiting: std::collections::HashSet<(String, String)> = leases.into_iter().collect();
        let deadline = Instant::now() + HANDOVER_WAIT;
        let mut taken_at: HashMap<(String, String), Instant> = HashMap::new();
        while !waiting.is_empty() {
            let now = Instant::now();
            let done = now >= deadline;
            if !done {
                if let Ok(still) = self.store.leases_of(&self.instance).await {
                    let still: std::collections::HashSet<(String, String)> =
                        still.into_iter().collect();
                    for lease in &waiting {
                        if !still.contains(lease) {
                            taken_at.entry(lease.clone()).or_insert(now);
                        }
                    }
                }
            }
            let leaving: Vec<(String, String)> = waiting
                .iter()
                .filter(|lease| {
                    done || taken_at
                        .get(*lease)
                        .is_some_and(|at| now.duration_since(*at) >= HANDOVER_OVERLAP)
                })
                .cloned()
                .collect();
            for lease in leaving {
                waiting.remove(&lease);
                if let Some(entry) = lock(&self.held).remove(&lease) {
                    entry.lost.send_replace(Some(Lost::HandedOver));
                }
                self.metrics.handovers.with_label_values(&[&lease.0]).inc();
                self.count_held(&lease.0);
            }
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn forget(&self, lease: &LeaseName<'_>) {
        lock(&self.held).remove(&key(lease));
        self.count_held(lease.namespace);
    }

    fn held_in(&self, namespace: &str) -> u64 {
        let held = lock(&self.held);
        held.keys().filter(|(ns, _)| ns == namespace).count() as u64
    }

    fn count_held(&self, namespace: &str) {
        // Every series a dashboard or alert watches exists from the plugin's first lease.
        self.metrics.takeovers.with_label_values(&[namespace]);
        self.metrics.handovers.with_label_values(&[namespace]);
        let held = self.held_in(namespace);
        self.metrics
            .held
            .with_label_values(&[namespace])
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// The leases of `namespace` this instance should hold: its work over the live instances,
    /// rounded up, and at least one.
    fn share(&self, namespace: &str) -> u64 {
        let work = lock(&self.work).get(namespace).copied().unwrap_or(0);
        let instances = self.instances.load(Ordering::Relaxed).max(1);
        work.div_ceil(instances).max(1)
    }

    /// One renewal: keeps this instance on the list, renews its leases, hears which were ended
    /// or taken, and hands over what is well beyond its share.
    async fn heartbeat(&self) {
        let started = Instant::now();
        let now = unix_ms();
        let until = now.saturating_add(millis(self.ttl));
        let renewed = async {
            let instances = self
                .store
                .instance_heartbeat(&self.slot, now, until)
                .await?;
            let held = self.store.lease_renew(&self.instance, until).await?;
            let work = self.store.lease_counts().await?;
            Ok::<_, StoreError>((instances, held, work))
        }
        .await;
        self.metrics
            .heartbeat
            .observe(started.elapsed().as_secs_f64());
        let (instances, renewed, work) = match renewed {
            Ok(answer) => answer,
            Err(error) => {
                self.metrics.renewal_failures.inc();
                tracing::warn!(%error, "renewing this instance's leases failed; its work goes on");
                // The work goes on: while the store is away nobody can take it over. Claims
                // wait until the store is back for a whole TTL, so that every live holder has
                // renewed before anyone takes what looks expired.
                self.claims_from.store(i64::MAX, Ordering::Relaxed);
                return;
            }
        };
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        if self.claims_from.load(Ordering::Relaxed) == i64::MAX {
            self.claims_from
                .store(now.saturating_add(millis(self.ttl)), Ordering::Relaxed);
        }
        self.instances.store(instances, Ordering::Relaxed);
        self.metrics
            .instances
            .set(i64::try_from(instances).unwrap_or(i64::MAX));
        *lock(&self.work) = work.into_iter().collect();

        let still: HashMap<(String, String), bool> = renewed
            .into_iter()
            .map(|lease| ((lease.namespace, lease.name), lease.ended))
            .collect();
        let mut namespaces = Vec::new();
        {
            let mut held = lock(&self.held);
            held.retain(|lease, entry| match still.get(lease) {
                // Taken while the renewal was under way: the renewal could not see it yet.
                None if entry.acquired >= started => true,
                None => {
                    entry.lost.send_replace(Some(Lost::Taken));
                    false
                }
                Some(ended) => {
                    if *ended {
                        entry.lost.send_replace(Some(Lost::Ended));
                    }
                    true
                }
            });
            namespaces.extend(held.keys().map(|(ns, _)| ns.clone()));
        }
        namespaces.sort_unstable();
        namespaces.dedup();
        for namespace in namespaces {
            self.count_held(&namespace);
            self.even_out(&namespace).await;
        }
    }

    /// Hands over the newest leases of `namespace` beyond a tenth over this instance's share,
    /// once that excess has lasted [`EXCESS_BEATS`] heartbeats: an upgrade's passing extra
    /// instance moves nothing.
    async fn even_out(&self, namespace: &str) {
        let share = self.share(namespace);
        let held = self.held_in(namespace);
        {
            let mut beats = lock(&self.excess_beats);
            if held <= share + share / 10 + 1 {
                beats.remove(namespace);
                return;
            }
            let beats = beats.entry(namespace.to_owned()).or_insert(0);
            *beats += 1;
            if *beats < EXCESS_BEATS {
                return;
            }
        }
        lock(&self.excess_beats).remove(namespace);
        let excess = usize::try_from(held - share).unwrap_or(0);
        let newest: Vec<(String, String)> = {
            let held = lock(&self.held);
            let mut mine: Vec<(&(String, String), &Held)> =
                held.iter().filter(|((ns, _), _)| ns == namespace).collect();
            mine.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.acquired));
            mine.into_iter()
                .take(excess)
                .map(|(lease, _)| lease.clone())
                .collect()
        };
        let now = unix_ms();
        for (namespace, name) in &newest {
            let lease = LeaseName { namespace, name };
            if let Err(error) = self.store.lease_release(&lease, &self.instance, now).await {
                tracing::warn!(%error, "handing a lease over failed; it stays here");
                return;
            }
        }
        self.let_go(newest).await;
    }
}
