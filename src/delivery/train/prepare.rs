//! The train's preparations: starting them behind the deliveries ahead, taking the events
//! they send back, holding a candidate's failure, and discarding a preparation whose base
//! changed.

use super::*;

impl Train<'_> {
    /// Starts the preparation of every waiting delivery whose deliveries ahead are rebased.
    pub(super) fn start_preparations(&mut self) {
        for i in 0..self.items.len() {
            if !matches!(self.items[i].status, Status::Waiting) {
                continue;
            }
            let mut ahead = Vec::new();
            let mut known = true;
            for a in &self.items[..i] {
                match (&a.status, a.checkouts()) {
                    (Status::Held { .. }, _) => {}
                    (_, Some(c)) => ahead.push(Ahead {
                        id: a.d.id,
                        checkouts: c.to_vec(),
                    }),
                    (_, None) => known = false,
                }
            }
            if !known {
                // Everything behind waits too: its bases depend on this one's.
                return;
            }
            self.start(i, ahead);
        }
    }

    fn start(&mut self, i: usize, ahead: Vec<Ahead>) {
        self.generations += 1;
        let generation = self.generations;
        let item = &mut self.items[i];
        item.generation = generation;
        item.used.clear();
        item.on = ahead
            .iter()
            .flat_map(|a| {
                a.checkouts
                    .iter()
                    .map(|c| (c.row.repo.clone(), (a.id, c.row.rebased_sha.clone())))
            })
            .collect();
        let d = item.d.clone();
        let (discard, discarded) = watch::channel(false);
        let id = d.id;
        let rebased_tx = self.tx.clone();
        let on_rebased = Box::new(move |c: &[Checkout]| {
            let _ = rebased_tx.send(Event::Rebased {
                id,
                generation,
                checkouts: c.to_vec(),
            });
        });
        let prep = Preparation {
            rank: Rank::new(i > 0, d.priority, d.id.0),
            ahead,
            discard: Some(discarded),
            on_rebased: Some(on_rebased),
        };
        let resume = item.resume.take();
        let (engine, tx) = (self.engine.clone(), self.tx.clone());
        let handle = tokio::spawn(async move {
            let result = engine.prepare(&d, resume, prep).await;
            let _ = tx.send(Event::Prepared {
                id,
                generation,
                result,
            });
        });
        item.status = Status::Preparing {
            task: Task { discard, handle },
            checkouts: None,
        };
    }

    /// Takes in what a task reported. Returns the delivery that ended, if one did.
    pub(super) async fn on_event(
        &mut self,
        event: Event,
    ) -> anyhow::Result<Option<(DeliveryId, State)>> {
        match event {
            Event::Rebased {
                id,
                generation,
                checkouts,
            } => {
                let Some(i) = self.current(id, generation) else {
                    return Ok(None);
                };
                let item = &mut self.items[i];
                item.used = used_bases(
                    checkouts.iter().map(|c| (&c.row.repo, &c.row.base_sha)),
                    &item.on,
                );
                if let Status::Preparing { checkouts: c, .. } = &mut item.status {
                    *c = Some(checkouts);
                }
                Ok(None)
            }
            Event::Prepared {
                id,
                generation,
                result,
            } => {
                let Some(i) = self.current(id, generation) else {
                    return Ok(None);
                };
                match result {
                    Ok(checkouts) => {
                        self.items[i].status = Status::Prepared { checkouts };
                        Ok(None)
                    }
                    Err(stop) => {
                        self.fill_used(i).await?;
                        // The head's failure is its own only on bases that still hold: a
                        // candidate built on a head that failed in this same batch of
                        // events is the head now, and is judged (discarded) next round.
                        let own = i == 0
                            && bases::judge(
                                &self.items[0].used,
                                &[],
                                &self.tips,
                                &self.landed,
                                &self.overtakers,
                            ) == Verdict::Holds;
                        if !own {
                            self.hold(i, stop).await?;
                            return Ok(None);
                        }
                        let item = self.items.remove(0);
                        let state = self.engine.report_stop(&item.d, stop).await?;
                        self.ended(&item.d, state).await;
                        self.tips_read = None;
                        Ok(Some((item.d.id, state)))
                    }
                }
            }
            Event::Released { id, result } => {
                let state = result?;
                let Some(i) = self.items.iter().position(|x| x.d.id == id) else {
                    return Ok(None);
                };
                let item = self.items.remove(i);
                if state == State::Delivered {
                    self.landed.insert(id);
                }
                self.ended(&item.d, state).await;
                // The upstreams moved (or were put back): read them before judging again.
                self.tips_read = None;
                Ok(Some((id, state)))
            }
        }
    }

    /// The index of a delivery whose current preparation is `generation`.
    fn current(&self, id: DeliveryId, generation: u64) -> Option<usize> {
        self.items
            .iter()
            .position(|x| x.d.id == id && x.generation == generation)
    }

    /// Holds a candidate's failure: the bases it used are recorded, and it waits to become
    /// the head.
    async fn hold(&mut self, i: usize, stop: Stop) -> anyhow::Result<()> {
        let (phase, summary) = match &stop {
            Stop::Failed(f) => (f.phase, f.summary()),
            Stop::Broken(e) => (Phase::Rebase, format!("{e:#}")),
        };
        let id = self.items[i].d.id;
        self.fill_used(i).await?;
        self.engine.store.hold(id, phase, &summary).await?;
        let d = &self.items[i].d;
        self.engine.say(&format!(
            "#{} {}: held, not reported while deliveries ahead are unresolved: {summary}",
            d.id, d.task
        ));
        self.items[i].status = Status::Held { stop };
        Ok(())
    }

    /// Records the bases a failed preparation used: a failure before the rebase reported
    /// them (in the rebase itself) finds them in the store.
    async fn fill_used(&mut self, i: usize) -> anyhow::Result<()> {
        if self.items[i].used.is_empty() {
            let rows = self.engine.store.repos(self.items[i].d.id).await?;
            let item = &mut self.items[i];
            item.used = used_bases(rows.iter().map(|r| (&r.repo, &r.base_sha)), &item.on);
        }
        Ok(())
    }

    /// Throws away a delivery's preparation: its steps are stopped, and it waits to be
    /// prepared again in its place.
    pub(super) async fn discard(
        &mut self,
        i: usize,
        reason: DiscardReason,
        why: &str,
    ) -> anyhow::Result<()> {
        let d = self.items[i].d.clone();
        let mut item = std::mem::replace(
            &mut self.items[i],
            Item {
                d,
                status: Status::Waiting,
                generation: 0,
                used: Used::new(),
                on: BTreeMap::new(),
                resume: None,
            },
        );
        self.stop_task(&mut item).await;
        self.engine.delete_candidates(item.d.id).await;
        self.engine.store.discard(item.d.id, reason, why).await?;
        self.engine.say(&format!(
            "#{} {}: discarded: {why}; it is prepared again",
            item.d.id, item.d.task
        ));
        Ok(())
    }

    /// Stops a delivery's preparation, if one runs, and waits for it to be gone (its
    /// checkouts are free then).
    pub(super) async fn stop_task(&self, item: &mut Item) {
        if let Status::Preparing { task, .. } = std::mem::replace(&mut item.status, Status::Waiting)
        {
            let _ = task.discard.send(true);
            let _ = task.handle.await;
        }
        item.generation = 0;
    }
}
