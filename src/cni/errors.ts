// The CNI spec's error result: {cniVersion, code, msg, details} on stdout, non-zero exit.
// Codes below 100 are the spec's; knet's own start at 100.
export const ErrCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  PoolExhausted: 100,
  InterfaceExists: 101,
  KernelFailure: 102,
  CheckFailed: 103,
  IptablesFailure: 104,
  Internal: 999,
} as const;

export class CniError extends Error {
  constructor(readonly code: number, msg: string, readonly details = '') {
    super(msg);
  }

  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export function invalidConfig(details: string): CniError {
  return new CniError(ErrCode.InvalidConfig, 'invalid network configuration', details);
}

export function invalidEnv(details: string): CniError {
  return new CniError(ErrCode.InvalidEnvironment, 'invalid environment variables', details);
}
