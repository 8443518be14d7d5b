/**
 * A pure function of a short text, with its answers kept: the egress proxy normalises the same few hosts and
 * addresses several times per request. The store is emptied when it fills, and a text longer than any real
 * one is answered but not kept, so junk cannot fill memory. Every caller shares an answer, so each is frozen
 * (by `freeze`, which reaches whatever the answer holds that must not change): a caller that changed one
 * would fail loudly instead of poisoning the next.
 */
export function rememberedByText<T>(compute: (text: string) => T, limits: { entries: number; textLength: number }, freeze: (answer: NonNullable<T>) => void = Object.freeze): (text: string) => T {
  const answers = new Map<string, T>();
  return (text) => {
    if (answers.has(text)) return answers.get(text) as T;
    const answer = compute(text);
    if (answer !== undefined && answer !== null) freeze(answer);
    if (text.length > limits.textLength) return answer;
    if (answers.size >= limits.entries) answers.clear();
    answers.set(text, answer);
    return answer;
  };
}
