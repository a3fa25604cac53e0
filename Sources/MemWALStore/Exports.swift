@_exported import MemWALCore
