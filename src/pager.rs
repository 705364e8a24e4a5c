//! The pages of one window of one list, in order.
//!
//! Page 1 is fetched first, on the caller's thread; the caller's answer to
//! it decides whether the rest is read (it may split the window instead).
//! Pages 2 and on are fetched by a few long-lived workers, up to
//! `--concurrency` requests in flight (each paced by `--max-rps` in the
//! client), and handed over strictly in page order. The total page count
//! follows the latest page; without one, paging goes on until an empty page.
//! Pages fetched past the point where the caller stopped are dropped unread.
//! Each page's buffer goes back to the client for the next answer.
//!
//! This is the one place that asks the API for a list page. Each request
//! holds one of the run's [`Slots`], which the lookups of new lines share:
//! `--concurrency` bounds list pages and lookups in flight together.

use crate::api::{ApiClient, Page};
use crate::control::RunControl;
use crate::sources::SourceKind;
use anyhow::Result;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, mpsc};

/// One list to read: a source's endpoint with the query of one window.
pub struct List {
    pub source: SourceKind,
    pub query: Vec<(&'static str, String)>,
}

/// One page as handed to the caller.
pub struct PageAt<'a> {
    pub number: u32,
    pub page: &'a Page,
    /// The server has further pages.
    pub more: bool,
    /// The server's page count for the whole window (0 when it gave none).
    pub total_pages: u64,
}

/// What the caller wants after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Next,
    Stop,
}

/// The `--concurrency` requests in flight that list pages and lookups share.
/// A holder waits for nothing else while it holds a slot (one request,
/// retries included), so a waiting thread always gets one.
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One request's slot, given back when dropped.
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(count: usize) -> Slots {
        Slots {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        }
    }

    pub fn hold(&self) -> Slot<'_> {
        let mut free = self.free.lock().expect("slots lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slots lock");
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slots lock") += 1;
        self.0.freed.notify_one();
    }
}

#[derive(Clone)]
pub struct Pager {
    client: Arc<ApiClient>,
    control: RunControl,
    concurrency: usize,
    slots: Arc<Slots>,
}

impl Pager {
    pub fn new(client: Arc<ApiClient>, control: RunControl, concurrency: u32) -> Pager {
        Pager {
            client,
            control,
            concurrency: concurrency as usize,
            slots: Arc::new(Slots::new(concurrency as usize)),
        }
    }

    /// The slots its requests hold, for the lookups to share.
    pub fn slots(&self) -> Arc<Slots> {
        Arc::clone(&self.slots)
    }

    /// Hands the pages of `list` to `each`, in order, until the list ends or
    /// `each` answers [`Flow::Stop`]. A signal or `--max-runtime` ends the
    /// reading between pages, also while requests are in flight.
    pub fn read(
        &self,
        list: &List,
        mut each: impl FnMut(PageAt<'_>) -> Result<Flow>,
    ) -> Result<()> {
        self.control.check()?;
        let first = self.fetch(list, 1)?;
        let at = page_at(1, &first);
        let (more, total_pages) = (at.more, at.total_pages);
        let flow = each(at)?;
        self.client.recycle(first);
        if more && flow == Flow::Next {
            self.read_rest(list, total_pages, each)?;
        }
        Ok(())
    }

    /// The one request for a list page.
    fn fetch(&self, list: &List, number: u32) -> Result<Page> {
        let _slot = self.slots.hold();
        self.client
            .fetch_page(&list.source.list_request(&list.query), number)
    }

    /// Pages 2 and on.
    fn read_rest(
        &self,
        list: &List,
        total_pages: u64,
        mut each: impl FnMut(PageAt<'_>) -> Result<Flow>,
    ) -> Result<()> {
        // There is a page 2 (page 1 said "more"), also when the server gave
        // no total; then each page says whether another follows.
        let mut last_page = total_pages.max(2);
        let workers = self
            .concurrency
            .min(usize::try_from(last_page - 1).unwrap_or(usize::MAX));
        std::thread::scope(|scope| {
            // A few long-lived workers take page numbers from `jobs`: a
            // thread per page would spread the allocator's per-thread arenas
            // and with them the memory a long backfill holds.
            let (jobs, job_queue) = mpsc::channel::<u32>();
            let job_queue = Arc::new(Mutex::new(job_queue));
            let (sender, receiver) = mpsc::channel::<(u32, Result<Page>)>();
            for _ in 0..workers {
                let (sender, job_queue) = (sender.clone(), Arc::clone(&job_queue));
                scope.spawn(move || {
                    loop {
                        // The lock is released before fetching (a guard in a
                        // `while let` would live through the whole body).
                        let next = job_queue.lock().expect("job queue lock").recv();
                        // Ends when `jobs` is dropped: the loop below returned.
                        let Ok(number) = next else { return };
                        // A panic must still send, or the loop below would
                        // wait for this page forever.
                        let fetched =
                            std::panic::catch_unwind(AssertUnwindSafe(|| self.fetch(list, number)))
                                .unwrap_or_else(|_| {
                                    Err(anyhow::anyhow!(
                                        "fetching page {number} failed (a bug: it panicked)"
                                    ))
                                });
                        // The receiver is gone only when the reading stopped early.
                        if sender.send((number, fetched)).is_err() {
                            return;
                        }
                    }
                });
            }
            let mut arrived: BTreeMap<u32, Result<Page>> = BTreeMap::new();
            let (mut next_request, mut next_process, mut in_flight) = (2u32, 2u32, 0usize);
            loop {
                // Pages that arrived ahead of a slow one count too: the
                // pages held at once stay within --concurrency, however
                // long one page takes.
                while in_flight + arrived.len() < self.concurrency
                    && u64::from(next_request) <= last_page
                {
                    self.control.check()?;
                    jobs.send(next_request)
                        .expect("the workers outlive this loop");
                    next_request += 1;
                    in_flight += 1;
                }
                if in_flight == 0 {
                    return Ok(());
                }
                let (number, fetched) = receiver.recv().expect("every fetch thread sends once");
                in_flight -= 1;
                arrived.insert(number, fetched);
                while let Some(fetched) = arrived.remove(&next_process) {
                    self.control.check()?;
                    let page = fetched?;
                    let at = page_at(next_process, &page);
                    let (more, total_pages) = (at.more, at.total_pages);
                    let flow = each(at)?;
                    self.client.recycle(page);
                    next_process += 1;
                    if !more || flow == Flow::Stop {
                        return Ok(());
                    }
                    // The total may change between pages: follow the latest,
                    // and without one, go on until an empty page.
                    last_page = total_pages.max(u64::from(next_process));
                }
            }
        })
    }
}

fn page_at(number: u32, page: &Page) -> PageAt<'_> {
    PageAt {
        number,
        page,
        more: !page.is_empty()
            && page
                .total_pages
                .is_none_or(|total| u64::from(number) < total),
        total_pages: page.total_pages.unwrap_or(0),
    }
}
