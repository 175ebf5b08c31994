// Versions that travel on the wire. PROTOCOL_VERSION changes when a message's shape
// changes incompatibly; nodes refuse messages of another protocol major.
export const SOFTWARE_VERSION = '0.1.0';
export const PROTOCOL_VERSION = 1;
