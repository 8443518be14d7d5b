/**
 * Prometheus metrics in the text exposition format (version 0.0.4), for the node API's `GET /metrics`.
 * A small registry of counters, gauges and histograms with labels; gauges that mirror live state (queue
 * depth, sink lag, spool size) are read when the page is rendered.
 */

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(',')}}`;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

interface Metric {
  readonly name: string;
  render(): string;
}

export class Counter implements Metric {
  private readonly values = new Map<string, number>();
  constructor(
    readonly name: string,
    private readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  /** Counts for one set of labels, its key built once: for a caller that counts the same series often. */
  labelled(labels: Labels): (by?: number) => void {
    const key = labelKey(labels);
    return (by = 1) => void this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n`;
    for (const [key, value] of this.values) out += `${this.name}${key} ${formatNumber(value)}\n`;
    return out;
  }
}

export class Gauge implements Metric {
  private readonly values = new Map<string, number>();
  /** Read at render time, for values that live elsewhere. */
  collect: (() => { labels: Labels; value: number }[]) | undefined;

  constructor(
    readonly name: string,
    private readonly help: string,
  ) {}

  set(value: number, labels: Labels = {}): void {
    this.values.set(labelKey(labels), value);
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n`;
    const values = new Map(this.values);
    for (const { labels, value } of this.collect?.() ?? []) values.set(labelKey(labels), value);
    for (const [key, value] of values) out += `${this.name}${key} ${formatNumber(value)}\n`;
    return out;
  }
}

interface HistogramSeries {
  labels: Labels;
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram implements Metric {
  private readonly series = new Map<string, HistogramSeries>();
  constructor(
    readonly name: string,
    private readonly help: string,
    /** Upper bounds, ascending, in the metric's unit. */
    readonly buckets: readonly number[],
  ) {}

  observe(value: number, labels: Labels = {}): void {
    this.add(this.entry(labels), value);
  }

  /** Observes into one set of labels, its key built once: for a caller that observes the same series often. */
  labelled(labels: Labels): (value: number) => void {
    const entry = this.entry(labels);
    return (value) => this.add(entry, value);
  }

  private entry(labels: Labels): HistogramSeries {
    const key = labelKey(labels);
    let entry = this.series.get(key);
    if (!entry) {
      entry = { labels, counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    return entry;
  }

  private add(entry: HistogramSeries, value: number): void {
    for (let i = 0; i < this.buckets.length; i += 1) if (value <= this.buckets[i]!) entry.counts[i]! += 1;
    entry.sum += value;
    entry.count += 1;
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    for (const { labels, counts, sum, count } of this.series.values()) {
      this.buckets.forEach((bound, i) => {
        out += `${this.name}_bucket${labelKey({ ...labels, le: formatNumber(bound) })} ${counts[i]}\n`;
      });
      out += `${this.name}_bucket${labelKey({ ...labels, le: '+Inf' })} ${count}\n`;
      out += `${this.name}_sum${labelKey(labels)} ${formatNumber(sum)}\n`;
      out += `${this.name}_count${labelKey(labels)} ${count}\n`;
    }
    return out;
  }
}

/** Seconds: 1 µs to 1 s. */
const LATENCY_BUCKETS = [0.000001, 0.000002, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1];

/** The node's metrics. Data planes feed decisions through the audit log; the DLP scanner calls `observeScan`. */
export class AuditMetrics {
  readonly decisions = new Counter('gatehouse_decisions_total', 'Decisions recorded, by surface and effect.');
  readonly decisionLatency = new Histogram('gatehouse_decision_latency_seconds', 'Time the policy engine took per decision.', LATENCY_BUCKETS);
  readonly scanLatency = new Histogram('gatehouse_scan_latency_seconds', 'Time one secret scan took.', LATENCY_BUCKETS);
  readonly auditWriteFailures = new Counter('gatehouse_audit_write_failures_total', 'Audit appends that failed (each one denied its decision).');
  readonly queueDepth = new Gauge('gatehouse_audit_queue_depth', 'Audit records waiting to be written.');
  readonly sinkLag = new Gauge('gatehouse_audit_sink_lag_records', 'Records a sink has not yet delivered.');
  readonly sinkSpool = new Gauge('gatehouse_audit_sink_spool_bytes', 'Bytes waiting in a sink spool.');
  readonly sinkDropped = new Gauge('gatehouse_audit_sink_dropped_total', 'Records a sink dropped because its spool was full.');
  readonly sinkUp = new Gauge('gatehouse_audit_sink_up', '1 when the sink last delivered without error, else 0.');
  private readonly all: Metric[] = [
    this.decisions,
    this.decisionLatency,
    this.scanLatency,
    this.auditWriteFailures,
    this.queueDepth,
    this.sinkLag,
    this.sinkSpool,
    this.sinkDropped,
    this.sinkUp,
  ];

  /** Per surface and effect, the series a record counts in, so a record builds no label key (one per request). */
  private readonly recordSeries = new Map<string, { count: () => void; latency: (seconds: number) => void }>();
  private readonly scanSeries = new Map<string, (seconds: number) => void>();

  /** Counts one record: decisions by surface and effect, and the engine's latency. */
  observeRecord(record: { surface: string; effect: string; latencyUs: number }): void {
    const { surface, effect } = record;
    if (surface === 'system') return;
    const key = `${surface}\n${effect}`;
    let series = this.recordSeries.get(key);
    if (!series) {
      series = { count: this.decisions.labelled({ surface, effect }), latency: this.decisionLatency.labelled({ surface }) };
      this.recordSeries.set(key, series);
    }
    series.count();
    if (record.latencyUs > 0) series.latency(record.latencyUs / 1e6);
  }

  observeScan(microseconds: number, surface = 'mcp'): void {
    let observe = this.scanSeries.get(surface);
    if (!observe) {
      observe = this.scanLatency.labelled({ surface });
      this.scanSeries.set(surface, observe);
    }
    observe(microseconds / 1e6);
  }

  /** The body of `GET /metrics` (content type `text/plain; version=0.0.4`). */
  render(): string {
    return this.all.map((metric) => metric.render()).join('');
  }
}

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
