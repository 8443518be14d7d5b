/**
 * OpenTelemetry logs over OTLP/HTTP, through the official exporter (`@opentelemetry/exporter-logs-otlp-http`,
 * which speaks the OTLP/HTTP JSON encoding). Each record becomes one log record: the record's JSON as the
 * body, its decision facts as `gatehouse.*` attributes, and a severity from its effect. The exporter is used
 * directly rather than through a batching processor, so the spool learns whether each batch was accepted.
 */
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { AuditRecord } from '../record.js';
import type { Sink } from './types.js';

/** ExportResultCode.SUCCESS in @opentelemetry/core. */
const EXPORT_SUCCESS = 0;

function severityOf(effect: string): { number: SeverityNumber; text: string } {
  if (effect === 'deny') return { number: SeverityNumber.WARN, text: 'WARN' };
  if (effect === 'error') return { number: SeverityNumber.ERROR, text: 'ERROR' };
  return { number: SeverityNumber.INFO, text: 'INFO' };
}

export class OtlpLogSink implements Sink {
  private readonly exporter: OTLPLogExporter;
  private readonly resources = new Map<string, Resource>();

  constructor(
    readonly name: string,
    url: string,
    headers: Record<string, string> = {},
  ) {
    this.exporter = new OTLPLogExporter({ url, headers, timeoutMillis: 10_000, concurrencyLimit: 1 });
  }

  private resourceFor(node: string): Resource {
    let resource = this.resources.get(node);
    if (!resource) {
      resource = resourceFromAttributes({ 'service.name': 'gatehouse', 'host.name': node });
      this.resources.set(node, resource);
    }
    return resource;
  }

  private toLogRecord(line: string): ReadableLogRecord {
    const record = JSON.parse(line) as AuditRecord;
    const millis = Date.parse(record.time);
    const hrTime: [number, number] = [Math.floor(millis / 1000), (millis % 1000) * 1_000_000];
    const severity = severityOf(record.effect);
    const attributes: Record<string, string | number | string[]> = {
      'gatehouse.seq': record.seq ?? 0,
      'gatehouse.surface': record.surface,
      'gatehouse.action': record.action,
      'gatehouse.resource': record.resource,
      'gatehouse.effect': record.effect,
      'gatehouse.rules': record.rules,
      'gatehouse.correlation_id': record.correlationId,
    };
    if (record.principal?.agent) attributes['gatehouse.agent'] = record.principal.agent;
    return {
      hrTime,
      hrTimeObserved: hrTime,
      severityNumber: severity.number,
      severityText: severity.text,
      body: line,
      eventName: 'gatehouse.audit',
      resource: this.resourceFor(record.node),
      instrumentationScope: { name: 'gatehouse.audit' },
      attributes,
      droppedAttributesCount: 0,
    };
  }

  send(lines: readonly string[]): Promise<void> {
    const records = lines.map((line) => this.toLogRecord(line));
    return new Promise((resolve, reject) => {
      this.exporter.export(records, (result) => {
        if (result.code === EXPORT_SUCCESS) resolve();
        else reject(result.error ?? new Error('the OTLP receiver did not accept the logs'));
      });
    });
  }

  async close(): Promise<void> {
    await this.exporter.shutdown();
  }
}
