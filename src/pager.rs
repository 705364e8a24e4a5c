//! The pages of one window of one list, in order.
//!
//! Page 1 is fetched first, on the caller's thread; the caller's answer to
//! it decides whether the rest is read (it may split the window instead).
//! Pages 2 and on are fetched by a few long-lived workers, up to
//! `--concurrency` requests in flight (each paced by `--max-rps` in the
//! client), and handed over strictly in page order. The workers are started
//! once per run, with the first list that has a page 2. The total page count
//! follows the latest page; without one, paging goes on until an empty page.
//! Pages fetched past the point where the caller stopped are dropped unread.
//! Each page's buffer goes back to the client for the next answer.
//!
//! A server (or a proxy) that ignores `page` answers page 1 every time; paging
//! on would re-read it until `--max-runtime` and never reach the rest. The
//! client refuses a page whose `page_number` is not the one asked for; a page
//! without one is compared here, in order, with the page before it, and a
//! repeat ends the reading with the same protocol error (76).
//!
//! This is the one place that asks the API for a list page. Each request
//! holds one of the run's [`Slots`], which the lookups of new lines share:
//! `--concurrency` bounds list pages and lookups in flight together.

use crate::api::{ApiClient, Page, page_ignored};
use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use crate::sources::SourceKind;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
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
    workers: Arc<Workers>,
}

/// A page to fetch, and where its answer goes.
struct Job {
    list: Arc<List>,
    number: u32,
    /// Set once the window's reader returned: the page is no longer wanted.
    unwanted: Arc<AtomicBool>,
    reply: mpsc::Sender<(u32, Fetched)>,
}

/// A worker's answer to a [`Job`].
enum Fetched {
    Page(Result<Page>),
    /// The reader had returned before the job was taken: nothing was asked.
    Skipped,
}

/// The run's page workers, started with the first window that has a page 2
/// and kept until the run ends. Threads that live for the whole run keep
/// their allocator arenas with them: workers started anew for every window
/// of a long backfill (while the HTTP client starts a short thread for each
/// request's host lookup) were handed ever other arenas, and the memory each
/// one kept added up.
struct Workers {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current job.
        drop(match self.jobs.get_mut() {
            Ok(jobs) => jobs.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        });
        let threads = match self.threads.get_mut() {
            Ok(threads) => std::mem::take(threads),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for thread in threads {
            // A worker's panic was already caught and sent as its page's error.
            let _ = thread.join();
        }
    }
}

impl Pager {
    pub fn new(client: Arc<ApiClient>, control: RunControl, concurrency: u32) -> Pager {
        Pager {
            client,
            control,
            // As the slots and the lookups do: with 0, no page after the
            // first would ever be asked for, and the window would end there.
            concurrency: (concurrency as usize).max(1),
            slots: Arc::new(Slots::new(concurrency as usize)),
            workers: Arc::new(Workers {
                jobs: Mutex::new(None),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The slots its requests hold, for the lookups to share.
    pub fn slots(&self) -> Arc<Slots> {
        Arc::clone(&self.slots)
    }

    /// Hands the pages of `list` to `each`, in order, until the list ends or
    /// `each` answers [`Flow::Stop`]. A signal or `--max-runtime` ends the
    /// reading between pages, also while requests are in flight. When it
    /// returns, none of this list's requests is still in flight.
    pub fn read(
        &self,
        list: &List,
        mut each: impl FnMut(PageAt<'_>) -> Result<Flow>,
    ) -> Result<()> {
        self.control.check()?;
        let first = fetch(&self.client, &self.slots, list, 1)?;
        let at = page_at(1, &first);
        let (more, total_pages) = (at.more, at.total_pages);
        let flow = each(at)?;
        if more && flow == Flow::Next {
            self.read_rest(list, total_pages, first, each)?;
        } else {
            self.client.recycle(first);
        }
        Ok(())
    }

    /// The queue of the run's workers, starting them on first use.
    /// The system may refuse threads (a pids limit such as systemd's
    /// `TasksMax=`): the run goes on with the workers it got, and without
    /// any ends with 75, to try again next run.
    fn job_queue(&self) -> Result<mpsc::Sender<Job>> {
        let mut jobs = self.workers.jobs.lock().expect("job queue lock");
        if let Some(jobs) = jobs.as_ref() {
            return Ok(jobs.clone());
        }
        let (sender, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = self.workers.threads.lock().expect("worker list lock");
        for _ in 0..self.concurrency {
            let queue = Arc::clone(&queue);
            let (client, slots) = (Arc::clone(&self.client), Arc::clone(&self.slots));
            let started = std::thread::Builder::new().spawn(move || {
                loop {
                    // The lock is released before fetching (a guard in a
                    // `while let` would live through the whole body).
                    let next = queue.lock().expect("job queue lock").recv();
                    // Ends when the queue is closed: the run is over.
                    let Ok(job) = next else { return };
                    let fetched = if job.unwanted.load(Ordering::Acquire) {
                        Fetched::Skipped
                    } else {
                        // A panic must still answer, or the reader would
                        // wait for this page forever.
                        Fetched::Page(
                            std::panic::catch_unwind(AssertUnwindSafe(|| {
                                fetch(&client, &slots, &job.list, job.number)
                            }))
                            .unwrap_or_else(|_| {
                                Err(anyhow::anyhow!(
                                    "fetching page {} failed (a bug: it panicked)",
                                    job.number
                                ))
                            }),
                        )
                    };
                    // The reader waits for every answer of its window.
                    let _ = job.reply.send((job.number, fetched));
                }
            });
            match started {
                Ok(thread) => threads.push(thread),
                Err(err) if threads.is_empty() => {
                    return Err(fail(
                        ExitKind::Temporary,
                        format!("cannot start a thread to fetch pages: {err}"),
                    ));
                }
                Err(err) => {
                    crate::warn!(
                        "cannot start more than {} of {} page workers: {err}; going on with those",
                        threads.len(),
                        self.concurrency
                    );
                    break;
                }
            }
        }
        *jobs = Some(sender.clone());
        Ok(sender)
    }

    /// Pages 2 and on; `first` is page 1, for page 2 to be compared with.
    fn read_rest(
        &self,
        list: &List,
        total_pages: u64,
        first: Page,
        mut each: impl FnMut(PageAt<'_>) -> Result<Flow>,
    ) -> Result<()> {
        let jobs = self.job_queue()?;
        let (reply, replies) = mpsc::channel::<(u32, Fetched)>();
        let mut window = Window {
            client: &self.client,
            unwanted: Arc::new(AtomicBool::new(false)),
            replies,
            in_flight: 0,
            previous: None,
        };
        window.previous = Unnumbered::of(&first);
        self.client.recycle(first);
        let list = Arc::new(List {
            source: list.source,
            query: list.query.clone(),
        });
        // There is a page 2 (page 1 said "more"), also when the server gave
        // no total; then each page says whether another follows.
        let mut last_page = total_pages.max(2);
        let mut arrived: BTreeMap<u32, Result<Page>> = BTreeMap::new();
        let (mut next_request, mut next_process) = (2u32, 2u32);
        loop {
            // Pages that arrived ahead of a slow one count too: the pages
            // held at once stay within --concurrency, however long one
            // page takes.
            while window.in_flight + arrived.len() < self.concurrency
                && u64::from(next_request) <= last_page
            {
                self.control.check()?;
                jobs.send(Job {
                    list: Arc::clone(&list),
                    number: next_request,
                    unwanted: Arc::clone(&window.unwanted),
                    reply: reply.clone(),
                })
                .expect("the workers outlive the pager's reads");
                next_request += 1;
                window.in_flight += 1;
            }
            if window.in_flight == 0 {
                return Ok(());
            }
            let (number, fetched) = window.replies.recv().expect("the reader holds a sender");
            window.in_flight -= 1;
            let Fetched::Page(fetched) = fetched else {
                unreachable!("pages are skipped only once the reader returned")
            };
            arrived.insert(number, fetched);
            while let Some(fetched) = arrived.remove(&next_process) {
                self.control.check()?;
                let page = fetched?;
                if repeats(window.previous.as_ref(), &page) {
                    let path = list.source.list_request(&list.query).path;
                    let message = page_ignored(path, next_process, u64::from(next_process - 1));
                    return Err(fail(ExitKind::Protocol, message));
                }
                let at = page_at(next_process, &page);
                let (more, total_pages) = (at.more, at.total_pages);
                let flow = each(at)?;
                window.previous = Unnumbered::of(&page);
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
    }
}

/// The one request for a list page.
fn fetch(client: &ApiClient, slots: &Slots, list: &List, number: u32) -> Result<Page> {
    let _slot = slots.hold();
    client.fetch_page(&list.source.list_request(&list.query), number)
}

/// One window's pages in the workers' hands. However the reading ends
/// (done, stopped early, an error, a panic), dropping it marks the pages
/// not yet taken as unwanted and waits for the answers of those in flight,
/// so no request of a window outlives its reading.
struct Window<'a> {
    client: &'a ApiClient,
    unwanted: Arc<AtomicBool>,
    replies: mpsc::Receiver<(u32, Fetched)>,
    in_flight: usize,
    /// The page handed over last, when it did not say its number, for the
    /// next one to be compared with.
    previous: Option<Unnumbered>,
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        self.unwanted.store(true, Ordering::Release);
        while self.in_flight > 0 {
            let Ok((_, fetched)) = self.replies.recv() else {
                return;
            };
            self.in_flight -= 1;
            if let Fetched::Page(Ok(page)) = fetched {
                self.client.recycle(page);
            }
        }
    }
}

/// What is kept of a handed-over page that did not say its number, for the
/// next page to be compared with: its item count and a digest of its items.
/// The page itself goes back to the client at once, so the comparison holds
/// no page longer than before: the memory bound in `api` stays what it was,
/// also for each lookup's device list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unnumbered {
    len: usize,
    digest: [u8; 32],
}

impl Unnumbered {
    /// `None` for a page that says its number (never compared) or is empty
    /// (it ends the reading). Each item is hashed with its length, so items
    /// split differently never digest alike.
    pub(crate) fn of(page: &Page) -> Option<Unnumbered> {
        if page.page_number.is_some() || page.is_empty() {
            return None;
        }
        let mut hasher = Sha256::new();
        for item in page.items() {
            hasher.update((item.len() as u64).to_le_bytes());
            hasher.update(item.as_bytes());
        }
        Some(Unnumbered {
            len: page.len(),
            digest: hasher.finalize().into(),
        })
    }
}

/// Whether `page`, which does not say its number, holds exactly the items of
/// the page before it (`previous`, when that did not say its number either):
/// the same sign of a server that ignores `page` as a wrong `page_number`.
/// Cheap on every page of a long backfill: pages that say their number (every
/// page of the real API) are not hashed. (A page that says its number is not
/// compared: when new events push a whole page's worth of items down the list
/// between two requests, the next page really does repeat the one before.)
pub(crate) fn repeats(previous: Option<&Unnumbered>, page: &Page) -> bool {
    previous.is_some() && Unnumbered::of(page).as_ref() == previous
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::Server;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A threats list of five pages; pages 3 to 5 take a while.
    fn five_pages(answered: Arc<AtomicUsize>) -> Server {
        Server::start(move |method, url| {
            if method == "POST" {
                return (200, r#"{"access_token":"token"}"#);
            }
            if !url.contains("page=1&") && !url.contains("page=2&") {
                std::thread::sleep(Duration::from_millis(300));
            }
            answered.fetch_add(1, Ordering::SeqCst);
            // Numbered, like the real API's: the same items on every page.
            let number = (1..=5).find(|n| url.contains(&format!("page={n}&")));
            let body = match number {
                Some(1) => r#"{"page_number": 1, "total_pages": 5, "page_items": [{"id": "a"}]}"#,
                Some(2) => r#"{"page_number": 2, "total_pages": 5, "page_items": [{"id": "a"}]}"#,
                Some(3) => r#"{"page_number": 3, "total_pages": 5, "page_items": [{"id": "a"}]}"#,
                Some(4) => r#"{"page_number": 4, "total_pages": 5, "page_items": [{"id": "a"}]}"#,
                _ => r#"{"page_number": 5, "total_pages": 5, "page_items": [{"id": "a"}]}"#,
            };
            (200, body)
        })
    }

    fn threats() -> List {
        let source = crate::sources::from_name("threats").unwrap();
        let now = chrono::Utc::now();
        List {
            source,
            query: source.window_query(now - chrono::TimeDelta::hours(1), now),
        }
    }

    /// The numbers of the pages `pager` hands over for the threats list,
    /// stopping after page `stop_after` when given.
    fn page_numbers(pager: &Pager, stop_after: Option<u32>) -> Vec<u32> {
        let mut pages = Vec::new();
        pager
            .read(&threats(), |at| {
                pages.push(at.number);
                Ok(if Some(at.number) == stop_after {
                    Flow::Stop
                } else {
                    Flow::Next
                })
            })
            .unwrap();
        pages
    }

    /// The pages a read hands over from a server answering `body(url)`,
    /// or its error; and the requests the server saw.
    fn read_all(body: fn(&str) -> &'static str) -> (Result<Vec<u32>>, Vec<String>) {
        let server = Server::start(move |method, url| match method {
            "POST" => (200, r#"{"access_token":"token"}"#),
            _ => (200, body(url)),
        });
        let pager = Pager::new(
            Arc::new(server.client()),
            RunControl::install(None).unwrap(),
            4,
        );
        let mut pages = Vec::new();
        // Stops a server that would keep the read going for ever.
        let read = pager.read(&threats(), |at| {
            pages.push(at.number);
            Ok(if at.number < 10 {
                Flow::Next
            } else {
                Flow::Stop
            })
        });
        (read.map(|()| pages), server.seen())
    }

    #[test]
    fn an_unnumbered_page_that_repeats_the_one_before_is_76() {
        // No page_number, no total: "more" for ever, until --max-runtime.
        let (read, seen) = read_all(|_| r#"{"page_items":[{"id":"a"},{"id":"b"}]}"#);
        let err = read.unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), 76);
        assert_eq!(
            format!("{err:#}"),
            "GET /threats/v2 page 2: the answer is page 1 (the server ignored the page parameter)"
        );
        assert_eq!(seen.len(), 1 + 2, "{seen:?}");
    }

    #[test]
    fn pages_that_differ_or_say_their_number_are_read_on() {
        // Unnumbered pages of the same size, differing in one byte.
        let (read, _) = read_all(|url| {
            if url.contains("page=1&") {
                r#"{"page_items":[{"id":"a"},{"id":"b"}]}"#
            } else if url.contains("page=2&") {
                r#"{"page_items":[{"id":"a"},{"id":"c"}]}"#
            } else {
                r#"{"page_items":[]}"#
            }
        });
        assert_eq!(read.unwrap(), [1, 2, 3]);
        // Numbered pages that repeat: new events pushed a page's worth of
        // items down the list between two requests.
        let (read, _) = read_all(|url| {
            if url.contains("page=1&") {
                r#"{"page_number":1,"total_pages":2,"page_items":[{"id":"a"}]}"#
            } else {
                r#"{"page_number":2,"total_pages":2,"page_items":[{"id":"a"}]}"#
            }
        });
        assert_eq!(read.unwrap(), [1, 2]);
        // Only a page without a number is compared: page 2 says it is page 2.
        let (read, _) = read_all(|url| {
            if url.contains("page=1&") {
                r#"{"total_pages":2,"page_items":[{"id":"a"}]}"#
            } else {
                r#"{"page_number":2,"total_pages":2,"page_items":[{"id":"a"}]}"#
            }
        });
        assert_eq!(read.unwrap(), [1, 2]);
    }

    #[test]
    fn comparing_unnumbered_pages_holds_no_page_back_from_the_pool() {
        let server = Server::start(|method, url| match method {
            "POST" => (200, r#"{"access_token":"token"}"#),
            _ if url.contains("page=1&") => (200, r#"{"page_items":[{"id":"a"}]}"#),
            _ if url.contains("page=2&") => (200, r#"{"page_items":[{"id":"b"}]}"#),
            _ if url.contains("page=3&") => (200, r#"{"page_items":[{"id":"c"}]}"#),
            _ => (200, r#"{"page_items":[]}"#),
        });
        let client = Arc::new(server.client());
        let pager = Pager::new(Arc::clone(&client), RunControl::install(None).unwrap(), 1);
        assert_eq!(page_numbers(&pager, None), [1, 2, 3, 4]);
        // One request at a time, each page given back once handed over: the
        // four answers were all read into one buffer. Keeping the page before
        // for the comparison would have needed a second.
        assert_eq!(client.pooled(), 1);
    }

    #[test]
    fn a_concurrency_of_0_reads_every_page_one_at_a_time() {
        let answered = Arc::new(AtomicUsize::new(0));
        let server = five_pages(Arc::clone(&answered));
        let pager = Pager::new(
            Arc::new(server.client()),
            RunControl::install(None).unwrap(),
            0,
        );
        assert_eq!(page_numbers(&pager, None), [1, 2, 3, 4, 5]);
        assert_eq!(pager.workers.threads.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_read_stopped_early_returns_only_once_its_requests_in_flight_are_answered() {
        let answered = Arc::new(AtomicUsize::new(0));
        let server = five_pages(Arc::clone(&answered));
        let client = Arc::new(server.client());
        let control = RunControl::install(None).unwrap();
        let pager = Pager::new(client, control, 4);
        assert_eq!(page_numbers(&pager, Some(2)), [1, 2]);
        // Pages 2 to 5 were queued at once (--concurrency 4). Those a worker
        // had taken when page 2 said stop (all of them, unless the machine
        // is busy) were waited for although nobody wanted them any more;
        // the rest were never asked for. Either way no request is left.
        let at_return = answered.load(Ordering::SeqCst);
        assert!((2..=5).contains(&at_return), "{at_return}");
        assert_eq!(server.seen().len(), 1 + at_return, "{:?}", server.seen());
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            answered.load(Ordering::SeqCst),
            at_return,
            "a request outlived the read"
        );
        assert_eq!(server.seen().len(), 1 + at_return, "{:?}", server.seen());
    }

    #[test]
    fn the_workers_are_started_once_and_serve_every_read_of_the_run() {
        let answered = Arc::new(AtomicUsize::new(0));
        let server = five_pages(Arc::clone(&answered));
        let client = Arc::new(server.client());
        let control = RunControl::install(None).unwrap();
        let pager = Pager::new(client, control, 3);
        let workers = || pager.workers.threads.lock().unwrap().len();
        assert_eq!(workers(), 0, "no worker before a page 2 is wanted");
        for _ in 0..2 {
            assert_eq!(page_numbers(&pager, None), [1, 2, 3, 4, 5]);
            assert_eq!(workers(), 3);
        }
        assert_eq!(answered.load(Ordering::SeqCst), 10);
    }
}
