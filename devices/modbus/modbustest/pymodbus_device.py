"""A Modbus TCP device played by pymodbus's server, for Tether's tests.

Run with Debian's /usr/bin/python3 (python3-pymodbus):

    /usr/bin/python3 pymodbus_device.py PORT [UNIT]

It listens on 127.0.0.1:PORT and answers as unit UNIT only (0 or none: every
unit), with zero-based addresses and 200 of each table, filled so a test can
tell them apart:

    holding register i = 10*i, input register i = 1000+i,
    coil i = (i % 2 == 0), discrete input i = (i % 3 == 0).

Addresses 200 and up are illegal (exception 2). It prints "ready" on stdout
once it listens and runs until killed.
"""
import asyncio
import logging
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncTcpServer

N = 200


def main():
    port = int(sys.argv[1])
    unit = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    logging.basicConfig(level=logging.CRITICAL)
    slave = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [i % 3 == 0 for i in range(N)]),
        co=ModbusSequentialDataBlock(0, [i % 2 == 0 for i in range(N)]),
        hr=ModbusSequentialDataBlock(0, [10 * i for i in range(N)]),
        ir=ModbusSequentialDataBlock(0, [1000 + i for i in range(N)]),
        zero_mode=True)
    if unit:
        context = ModbusServerContext(slaves={unit: slave}, single=False)
    else:
        context = ModbusServerContext(slaves=slave, single=True)

    async def run():
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, lambda: print("ready", flush=True))
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))

    asyncio.run(run())


if __name__ == "__main__":
    main()
