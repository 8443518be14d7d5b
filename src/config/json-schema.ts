import { z } from 'zod';
import { configSchema } from './schema.js';

/** The JSON Schema (draft 2020-12) of gatehouse.yaml as a person writes it (defaults may be left out). */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12', unrepresentable: 'any' }) as Record<string, unknown>;
  return { $id: 'https://gatehouse.dev/schema/gatehouse.json', title: 'Gatehouse configuration (gatehouse.yaml)', ...schema };
}
